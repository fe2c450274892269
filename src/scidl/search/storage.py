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

Trial state changes are exclusive on every storage: of several workers that try to claim
the same waiting (re-queued) trial, or to finish the same running one, exactly one wins.
Optuna's :class:`RDBStorage` reads the state with ``SELECT ... FOR UPDATE`` and writes it
in a second statement; SQLite ignores ``FOR UPDATE`` (and Python's ``sqlite3`` runs the
read outside the write transaction), so two workers could both claim one trial.
:class:`ExclusiveRDBStorage` makes each state change one conditional ``UPDATE ... WHERE
state = <expected>`` and checks that it changed exactly one row: SQLite serialises writers
on its database lock, PostgreSQL re-checks the ``WHERE`` after waiting for the row lock.
The journal storage needs nothing more: every change is a line appended under the
journal's file lock, and all processes replay the lines in the same order, so the first
claim wins everywhere.

The storage URL (it may hold a database password) is passed to spawned workers in the
environment variable ``SCIDL_SEARCH_STORAGE``, never on their command line.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

STORAGE_ENV = "SCIDL_SEARCH_STORAGE"


class StorageError(ValueError):
    """A storage string that cannot be opened (message says why)."""


def storage_from_env() -> str | None:
    """The storage URL handed over in ``SCIDL_SEARCH_STORAGE`` (None when unset)."""
    return os.environ.get(STORAGE_ENV) or None


# The states a trial may be in for a change to ``state`` to apply (Optuna's own rules:
# only a WAITING trial can be claimed; any unfinished trial can be finished).
_FROM_STATES: dict[TrialState, tuple[TrialState, ...]] = {
    TrialState.RUNNING: (TrialState.WAITING,),
    TrialState.COMPLETE: (TrialState.RUNNING, TrialState.WAITING),
    TrialState.PRUNED: (TrialState.RUNNING, TrialState.WAITING),
    TrialState.FAIL: (TrialState.RUNNING, TrialState.WAITING),
}


class ExclusiveRDBStorage(RDBStorage):
    """:class:`RDBStorage` whose trial state changes are atomic compare-and-set updates.

    ``set_trial_state_values`` runs ``UPDATE trials SET state=NEW ... WHERE trial_id=ID
    AND state IN (allowed)`` and looks at the number of changed rows: one means this
    caller won; zero means another worker changed the trial first (returns ``False`` when
    it is running, raises :class:`UpdateFinishedTrialError` when it is finished, as
    Optuna does). The objective values are written in the same transaction, after the
    update has taken the row (PostgreSQL) or database (SQLite) write lock.
    """

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        allowed = _FROM_STATES.get(state)
        if allowed is None:  # back to WAITING: not used by SciDL; keep Optuna's behaviour
            return super().set_trial_state_values(trial_id, state, values)
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from sqlalchemy import update

        table = models.TrialModel.__table__
        now = datetime.now(timezone.utc).replace(tzinfo=None)  # stored as naive UTC
        fields: dict[str, Any] = {"state": state}
        fields["datetime_start" if state == TrialState.RUNNING else "datetime_complete"] = now
        with _create_scoped_session(self.scoped_session) as session:
            result: Any = session.execute(
                update(table)
                .where(table.c.trial_id == trial_id, table.c.state.in_(allowed))
                .values(**fields)
            )
            if result.rowcount != 1:
                current = models.TrialModel.find_or_raise_by_id(trial_id, session)
                self.check_trial_is_updatable(trial_id, cast(TrialState, current.state))  # raises if finished
                return False
            for objective, value in enumerate(values or ()):
                _write_value(session, models, trial_id, objective, value)
        return True


def _write_value(session: Any, models: Any, trial_id: int, objective: int, value: float) -> None:
    """Insert or update one objective value of a trial (no state check: the caller holds it)."""
    stored, kind = models.TrialValueModel.value_to_stored_repr(value)
    row = (session.query(models.TrialValueModel)
           .filter_by(trial_id=trial_id, objective=objective).one_or_none())
    if row is None:
        session.add(models.TrialValueModel(trial_id=trial_id, objective=objective,
                                           value=stored, value_type=kind))
    else:
        row.value, row.value_type = stored, kind


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
            storage = ExclusiveRDBStorage(driver_url(url), engine_kwargs=engine)
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
