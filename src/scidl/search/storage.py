"""Optuna storages from one string: SQLite file, journal file, or a database URL.

=========================  ===============================================================
``--storage``              storage
=========================  ===============================================================
``search.db`` (a path)     SQLite file (embedded, zero set-up; one machine or local disk)
``sqlite:///abs/path.db``  the same, as a SQLAlchemy URL
``journal:PATH``           append-only journal file (Optuna ``JournalStorage`` +
                           ``JournalFileBackend``): for shared file systems where no
                           database server can run and SQLite's ``fcntl`` locks break (NFS)
``postgresql://u:p@h/db``  PostgreSQL server (any SQLAlchemy URL: ``mysql://...`` too)
=========================  ===============================================================
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend


class StorageError(ValueError):
    """A storage string that cannot be opened (message says why)."""


def normalize_url(spec: str) -> str:
    """Canonical form of a ``--storage`` value (SQLite paths become absolute URLs)."""
    spec = spec.strip()
    if not spec:
        raise StorageError("empty --storage; give a file path, journal:PATH or a database URL")
    if spec.startswith("journal:"):
        path = spec[len("journal:"):]
        if not path:
            raise StorageError("journal storage needs a path: journal:PATH")
        return "journal:" + str(Path(path).expanduser().resolve())
    if "://" in spec:
        return spec
    return "sqlite:///" + str(Path(spec).expanduser().resolve())


def kind_of(url: str) -> str:
    """``sqlite``, ``journal`` or the database dialect (``postgresql``...)."""
    if url.startswith("journal:"):
        return "journal"
    return url.split("://", 1)[0].split("+", 1)[0]


def driver_url(url: str) -> str:
    """Pick an installed PostgreSQL driver for a bare ``postgresql://`` URL.

    SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3; when only psycopg2 is installed
    (``pip install psycopg2-binary``), use ``postgresql+psycopg2://`` instead.
    """
    if not url.startswith(("postgresql://", "postgres://")):
        return url
    import importlib.util

    rest = url.split("://", 1)[1]
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
        return "postgresql+psycopg2://" + rest
    return "postgresql://" + rest


def open_storage(spec: str) -> BaseStorage:
    """Open (creating if needed) the storage named by ``spec``.

    Retries a few times: when many workers start at once on a fresh database, table
    creation can race (one creates, the others see a half-made schema).
    """
    url = normalize_url(spec)
    kind = kind_of(url)
    if kind == "journal":
        path = Path(url[len("journal:"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    engine: dict[str, Any] = {"pool_pre_ping": True}
    if kind == "sqlite":
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        # Wait (not fail) when another worker holds the write lock.
        engine = {"connect_args": {"timeout": 60}}
    last: Exception | None = None
    for attempt in range(5):
        try:
            storage = RDBStorage(driver_url(url), engine_kwargs=engine)
            if kind == "sqlite":
                _tune_sqlite(storage)
            return storage
        except ImportError as e:  # e.g. psycopg2 missing
            raise StorageError(f"cannot open {kind} storage: {e} (pip install psycopg2-binary)") from None
        except Exception as e:  # noqa: BLE001 - connection or schema race; retry then report
            last = e
            time.sleep(0.5 * (attempt + 1))
    raise StorageError(f"cannot open storage {redact(url)}: {last}")


def _tune_sqlite(storage: RDBStorage) -> None:
    """WAL journal + ``synchronous=NORMAL``: readers never block the writer and a commit
    costs no fsync. A killed worker still loses nothing (WAL is crash-safe for process
    death); only an OS crash may lose the last commits. Use a local disk (journal storage
    on NFS)."""
    from sqlalchemy import event

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()  # connections made during schema set-up get the pragmas too


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (for messages and logs)."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


def study_exists(storage: BaseStorage, name: str) -> bool:
    return any(s.study_name == name for s in storage.get_all_studies())


def delete_study_if_exists(storage: BaseStorage, name: str) -> None:
    if study_exists(storage, name):
        optuna.delete_study(study_name=name, storage=storage)
