"""The study's Optuna storage: Optuna's own `RDBStorage` (SQLite by default, PostgreSQL for many machines) with
heartbeats, so that a dead worker's job is failed and done again (`bsnas.search.scheduler`).

Why this storage. Several worker processes share one study, and a killed worker must lose at most its own
job. Optuna's RDB storage has heartbeats (its JournalStorage has none), so one
storage class serves one machine (SQLite, made safe for several processes by `BEGIN IMMEDIATE`, see
`_serialized_sqlite`) and many machines (PostgreSQL, whose row locks already serialize). bsnas once batched a
running trial's writes through Optuna's private RDB models (42 -> 15 ms per rejected candidate on SQLite); a
real search trains every feasible candidate for 5-30 s, so the saving was under 1 % of its time, while the
private models could change with any Optuna release: the stock storage is used.

Storage URLs may hold passwords: `redact_url` is what bsnas prints and stores. An SQLite URL must name a file
(`sqlite_file`); a file that is damaged is refused when it is opened (`PRAGMA quick_check`), as a StorageFault.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage

from bsnas.errors import BsnasError, StorageFault

__all__ = ["HEARTBEAT_S", "empty_sqlite_file", "grace_period", "guard_storage", "open_storage", "redact_url",
           "sqlite_file", "storage_failure", "storage_lost"]

HEARTBEAT_S = 10  # a worker beats every 10 s; its job is failed after 4 missed beats


def grace_period(heartbeat_s: int) -> int:
    """Seconds without a heartbeat after which a worker counts as dead: four missed beats."""
    return 4 * heartbeat_s


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***, for messages and stored settings."""
    try:
        import sqlalchemy

        parsed = sqlalchemy.engine.make_url(url)
    except Exception:  # not a URL sqlalchemy can parse: show only its scheme
        return url.split(":", 1)[0] + ":***" if ":" in url else "***"
    return parsed.render_as_string(hide_password=True) if parsed.password else url


def sqlite_file(url: str) -> Path | None:
    """The database file of an SQLite URL (None for other databases); an SQLite URL without a file (`sqlite:///`,
    `:memory:`: a database of its own for every connection) is a BsnasError."""
    if not url.startswith("sqlite"):
        return None
    import sqlalchemy

    try:
        database = sqlalchemy.engine.make_url(url).database
    except sqlalchemy.exc.ArgumentError:
        return None  # not a URL: open_storage says so
    if not database or database == ":memory:":
        raise BsnasError(f"--storage {redact_url(url)}: an SQLite URL names a file, e.g. sqlite:///runs/NAME/study.db "
                         "(an in-memory database is not shared by the workers, nor kept).")
    return Path(database)


def empty_sqlite_file(url: str) -> Path | None:
    """The file of an SQLite URL when it exists and is empty (0 bytes: SQLite would take it for a new database, and
    Optuna would make a new study in it), else None."""
    path = sqlite_file(url)
    return path if path is not None and path.is_file() and path.stat().st_size == 0 else None


def _check_intact(path: Path) -> None:
    """Refuse a damaged SQLite file (its pages fail SQLite's quick check) before Optuna reads or writes it."""
    connection = sqlite3.connect(path, timeout=120)
    try:
        problems = [row[0] for row in connection.execute("PRAGMA quick_check")]
    except sqlite3.OperationalError:
        return  # busy or unreadable, not damaged: opening it says why
    except sqlite3.DatabaseError as error:  # SQLITE_CORRUPT, SQLITE_NOTADB
        problems = [str(error)]
    finally:
        connection.close()
    if problems != ["ok"]:
        raise StorageFault(f"{path}: the SQLite file is damaged ({problems[0][:120]}); restore it from a backup and "
                           "run the command again, or start the search afresh under another --name.")


def open_storage(url: str, heartbeat_s: int = HEARTBEAT_S) -> RDBStorage:
    """The storage at an Optuna RDB URL, with heartbeats every `heartbeat_s` seconds (a job whose worker missed
    four beats is failed, see `bsnas.search.scheduler`). A damaged SQLite file is a StorageFault."""
    path = sqlite_file(url)
    if path is not None and path.is_file() and path.stat().st_size > 0:
        _check_intact(path)
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    try:
        storage = _rdb_storage(url, heartbeat_s, kwargs)
        if url.startswith("sqlite"):
            _serialized_sqlite(storage.engine)
        return storage
    except ImportError:
        extra = "; install it with pip install 'bsnas[postgresql]'" if url.startswith("postgres") else ""
        raise BsnasError(f"--storage {redact_url(url)}: the database driver for this URL is missing{extra}.") from None
    except Exception as error:  # sqlalchemy and the drivers raise their own types for bad URLs and servers
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        if url != redact_url(url):
            message = message.replace(url, redact_url(url))
        raise BsnasError(f"--storage {redact_url(url)}: cannot open this Optuna storage "
                         f"({type(error).__name__}: {_without_secrets(message, url)}).") from None


# what a database says to the second of two processes creating Optuna's tables at once: PostgreSQL, SQLite
_CREATED_BY_ANOTHER = ("already exists", "duplicate key", "UNIQUE constraint failed")


def _rdb_storage(url: str, heartbeat_s: int, kwargs: dict[str, Any], attempts: int = 5) -> RDBStorage:
    """Optuna's RDBStorage. Processes that open a new database at the same moment race to create Optuna's tables
    (`duplicate key value violates unique constraint "pg_type_typname_nsp_index"` on PostgreSQL, `UNIQUE constraint
    failed: alembic_version.version_num` on SQLite): the losers try again, at most `attempts` times, a moment
    later."""
    import sqlalchemy

    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeats and their retry callback are "experimental" (Optuna 2.8)
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # no stale-trial callback: Optuna's retry callback re-queues only jobs whose heartbeat went stale,
                # not those that never beat; the scheduler's sources re-queue both alike (bsnas.search.scheduler)
                return RDBStorage(url, heartbeat_interval=heartbeat_s, grace_period=grace_period(heartbeat_s),
                                  **kwargs)
        except sqlalchemy.exc.DBAPIError as error:
            racing = any(text in str(error) for text in _CREATED_BY_ANOTHER)
            if not racing or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _without_secrets(message: str, url: str) -> str:
    """A driver's message with the URL's password removed, wherever it appears."""
    try:
        import sqlalchemy

        password = sqlalchemy.engine.make_url(url).password
    except Exception:
        return message
    return message.replace(password, "***") if password else message


def _serialized_sqlite(engine) -> None:
    """Make SQLite safe for several worker processes: every transaction starts with `BEGIN IMMEDIATE`.

    Python's sqlite3 driver opens a transaction only at the first write, so Optuna's read-check-write steps
    (take a WAITING trial, fail a stale one) read outside any transaction and two processes could both see a
    trial WAITING and both take it (tests/test_storage.py reproduces it: 7-12 of 60 enqueued trials taken twice by
    four processes). With `BEGIN IMMEDIATE` each transaction holds the write lock from its first read; the
    others wait for it (up to the 120 s busy timeout). The journal is WAL with synchronous=NORMAL: readers do
    not block the writer and commits do not wait for the disk; a power cut may lose the last commits, never
    corrupt the file.
    """
    import sqlalchemy

    def on_connect(connection, _record) -> None:
        connection.isolation_level = None  # no implicit BEGIN from the driver: SQLAlchemy's begin below
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    def on_begin(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    sqlalchemy.event.listen(engine, "connect", on_connect)
    sqlalchemy.event.listen(engine, "begin", on_begin)
    engine.dispose()  # connections opened while creating the tables have neither


def storage_failure(error: BaseException) -> BaseException | None:
    """The database error behind `error` (itself, its cause or its context), when the storage failed: the server
    went away, the connection broke, the file is damaged. Optuna can turn one into another error on the way up
    (an `UnboundLocalError` while it records the failed trial), so the whole chain is read."""
    import sqlalchemy

    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        database = isinstance(error, sqlalchemy.exc.DatabaseError) and \
            not isinstance(error, sqlalchemy.exc.IntegrityError)  # a broken constraint is a bug, not a lost storage
        if database or isinstance(error, (sqlalchemy.exc.InterfaceError, optuna.exceptions.StorageInternalError)):
            return error
        error = error.__cause__ or error.__context__
    return None


def storage_lost(url: str, error: BaseException | None = None) -> StorageFault:
    """The one-line fault of a storage that went away under a command."""
    why = ""
    if error is not None:
        detail = _without_secrets((str(getattr(error, "orig", None) or error).strip().splitlines() or [""])[0], url)
        why = f" ({type(getattr(error, 'orig', None) or error).__name__}: {detail})"
    return StorageFault(f"the storage {redact_url(url)} went away{why}; nothing finished is lost: run the same "
                        "command again to resume once it is back.")


@contextlib.contextmanager
def guard_storage(url: str) -> Iterator[None]:
    """Turn a failure of the storage at `url` inside the block into one `StorageFault` (and keep the tracebacks of
    threads that it breaks meanwhile, Optuna's heartbeats, off the screen)."""
    previous = threading.excepthook

    def quiet(args) -> None:
        if storage_failure(args.exc_value) is None:
            previous(args)

    threading.excepthook = quiet
    try:
        yield
    except Exception as error:
        cause = storage_failure(error)
        if cause is None:
            raise
        raise storage_lost(url, cause) from None
    finally:
        threading.excepthook = previous
