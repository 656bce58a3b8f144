"""Shared fixtures: a PostgreSQL server of the test session's own, the storages to run search tests on, and torch's
thread count restored after every test."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

POSTGRES_ENV = "BSNAS_TEST_POSTGRES"  # a URL to use instead of starting a server


def _postgres_bindir() -> Path | None:
    for candidate in (shutil.which("pg_ctl"), *sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)):
        if candidate and Path(candidate).resolve().parent.joinpath("initdb").exists():
            return Path(candidate).resolve().parent
    return None


class PostgresServer:
    """A PostgreSQL server of the tests' own on a Unix socket (Debian's `postgresql`; as root it runs as the
    `postgres` user), with one database `bsnas`; `stop()` kills it as a crash would, `start()` brings it back."""

    def __init__(self, port: int):
        pytest.importorskip("psycopg", reason="no PostgreSQL driver here (pip install 'bsnas[postgresql]')")
        self.bindir = _postgres_bindir()
        if self.bindir is None:
            pytest.skip("no PostgreSQL server here: apt-get install postgresql, or set BSNAS_TEST_POSTGRES to a URL")
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # the server refuses to run as root
            if shutil.which("runuser") is None:
                pytest.skip("PostgreSQL cannot run as root and runuser is missing")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.root = Path(tempfile.mkdtemp(prefix="bsnas-pg-"))
        self.root.chmod(0o777)
        self.data, self.socket, self.port = self.root / "data", self.root / "socket", str(port)
        for folder in (self.data, self.socket):
            folder.mkdir()
            if self.as_user:
                shutil.chown(folder, "postgres")
        try:
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")
            self.start()
            self._run("createdb", "-h", str(self.socket), "-p", self.port, "-U", "postgres", "bsnas")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
            self.remove()
            pytest.skip(f"PostgreSQL could not start here: {error}")
        self.url = f"postgresql://postgres@/bsnas?host={self.socket}&port={self.port}"

    def _run(self, program: str, *argv: str) -> None:
        subprocess.run([*self.as_user, str(self.bindir / program), *argv], check=True, capture_output=True,
                       timeout=120)

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60", "-o",
                  f"-k {self.socket} -c listen_addresses='' -p {self.port} -c max_connections=200", "start")

    def stop(self) -> None:
        subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                        "stop"], capture_output=True, timeout=60)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL database for the session: $BSNAS_TEST_POSTGRES, or a server of the tests' own
    (`PostgresServer`). Skipped, saying why, when neither exists."""
    if os.environ.get(POSTGRES_ENV):
        yield os.environ[POSTGRES_ENV]
        return
    server = PostgresServer(50000 + os.getpid() % 10000)
    try:
        yield server.url
    finally:
        server.remove()


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, tmp_path):
    """A fresh storage URL: an SQLite file, or a new database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    server = request.getfixturevalue("postgres_url")
    import sqlalchemy

    name = f"t{os.getpid()}_{abs(hash(request.node.nodeid)) % 10**8}"
    engine = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    engine.dispose()
    return sqlalchemy.engine.make_url(server).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def space():
    """The shipped MobileNet search space, as the search tests use it."""
    from bsnas.space.load import load_space

    return load_space("search_spaces/mobilenet.yaml")


@pytest.fixture(autouse=True)
def keep_thread_count():
    """A test that trains with --threads N leaves torch's thread count as it found it."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
