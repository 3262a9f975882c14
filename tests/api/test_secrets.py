"""Secrets and personal data kept apart: the API's signing key and salt in its own private state (not where Airflow
tasks write), private files, no secret in any log line, readiness details for the admin only."""

from __future__ import annotations

import logging
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shadowgate.config import PathSettings, ServingSettings
from shadowgate.serving.runtime import Runtime, customer_salt, model_cache_key
from tests.api.conftest import make_client
from tests.api.test_decisions import URL, _tx
from tests.api.test_outcomes import PAID
from tests.redis_server import RedisServer

Factory = Callable[..., Callable[[], Runtime]]
SECRETS = {
    "admin": "adm1n-s3cret-7Qx",
    "ingest": "ing3st-s3cret-7Qx",
    "salt": "s4lt-s3cret-7Qx",
    "cache": "c4che-s3cret-7Qx",
}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_apis_local_secrets_live_in_its_own_private_state(tmp_path: Path) -> None:
    home = tmp_path / "home"
    serving = ServingSettings(state_dir=tmp_path / "api-state")
    salt = customer_salt(serving, home)
    key = model_cache_key(serving, home)
    secrets = tmp_path / "api-state" / "secrets"
    assert (secrets / "customer_salt").read_text() == salt and (secrets / "model_cache_key").read_bytes() == key
    assert {_mode(secrets / "customer_salt"), _mode(secrets / "model_cache_key")} == {0o600}
    assert _mode(secrets) == 0o700 and _mode(tmp_path / "api-state") == 0o700
    assert not (home / "secrets").exists()  # nothing under the home that Airflow tasks share
    assert customer_salt(serving, home) == salt  # made once


def test_a_salt_an_earlier_release_kept_in_the_shared_home_is_moved_not_remade(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "secrets").mkdir(parents=True)
    (home / "secrets" / "customer_salt").write_text("the-old-salt")
    serving = ServingSettings(state_dir=tmp_path / "api-state")
    assert customer_salt(serving, home) == "the-old-salt"  # hashes stay the same across the upgrade
    assert not (home / "secrets" / "customer_salt").exists()
    assert _mode(tmp_path / "api-state" / "secrets" / "customer_salt") == 0o600


def test_no_log_line_carries_a_secret(
    runtime_factory: Factory,
    redis_server: RedisServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A whole life of the API — start, decisions, outcomes, wrong keys, a reload, Redis going away and back, stop —
    with every secret set: none of them appears in any log line of the API process or its shadow process."""
    caplog.set_level(logging.DEBUG)
    factory = runtime_factory(customer_salt=SECRETS["salt"], model_cache_key=SECRETS["cache"])
    with make_client(factory, key=SECRETS["admin"], ingest_key=SECRETS["ingest"]) as client:
        admin = {"X-API-Key": SECRETS["admin"]}
        assert client.post(URL, json=_tx(1)).status_code == 200
        assert client.post("/v1/outcomes", json=PAID, headers={"X-Ingest-Key": SECRETS["ingest"]}).status_code == 202
        assert client.post("/v1/outcomes", json=PAID, headers={"X-Ingest-Key": SECRETS["admin"]}).status_code == 401
        assert client.post("/v1/admin/models/reload", headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.post("/v1/admin/models/reload", headers=admin).status_code == 200
        redis_server.stop()
        for i in range(2, 6):
            assert client.post(URL, json=_tx(i)).status_code == 200
        time.sleep(1.5)  # the shadow process and the book poller log the outage
        redis_server.start()
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        assert runtime.shadow.flush(30.0)
        details = client.get("/health/ready", headers=admin).json()
        assert details["journal"]["pending_bytes"] == 0
    captured = capfd.readouterr()
    logs = caplog.text + captured.out + captured.err
    assert "Redis" in logs  # the outage was logged: the check below looked at real log lines
    for name, secret in SECRETS.items():
        assert secret not in logs, f"the {name} secret is in a log line"
    # The salt's files are not where the test's home (shared with Airflow in a deployment) would have them.
    assert not (tmp_path / "home" / "secrets" / "customer_salt").exists()


def test_the_runtime_keeps_its_state_where_it_is_told(runtime_factory: Factory, tmp_path: Path) -> None:
    state = tmp_path / "api-only"
    with make_client(runtime_factory(state_dir=state, customer_salt=None)) as client:
        assert client.post(URL, json=_tx(1)).status_code == 200
    assert (state / "journal").is_dir() and (state / "model_cache").is_dir()
    assert _mode(state / "secrets" / "customer_salt") == 0o600
    assert not (PathSettings(home=tmp_path / "home").home / "serving").exists()
