"""The shared alert path: a condition is sent once per episode, and the webhook address never reaches a log."""

from __future__ import annotations

import dataclasses
import datetime as dt
import http.server
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shadowgate.pipelines.alerts import Alert, AlertState, Check, advance, alert_key, send_alert, task_failure_alert

SECRET = "T0001/B0002/sEcReTtOkEn42"
T0 = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)


class _Hook(http.server.BaseHTTPRequestHandler):
    status: ClassVar[int] = 200
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(_Hook.status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:  # the server's own access log would print the path
        pass


@pytest.fixture
def hook() -> Iterator[str]:
    _Hook.received, _Hook.status = [], 200
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/services/{SECRET}?token={SECRET[::-1]}"
    finally:
        server.shutdown()
        server.server_close()


def _alert(**fields: Any) -> Alert:
    return Alert(title="champion@3: AUC down", text="below its baseline", **fields)


def _assert_no_address(text: str, url: str) -> None:
    assert url not in text and SECRET not in text and SECRET[::-1] not in text


def test_a_delivered_alert_logs_no_address(hook: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # urllib and http.client log nothing of it either
    assert send_alert(_alert(details={"z": 4.2}), webhook_url=hook, timeout_s=5) is True
    assert [r["title"] for r in _Hook.received] == ["champion@3: AUC down"]
    assert "ALERT [error] champion@3: AUC down" in caplog.text
    _assert_no_address(caplog.text, hook)


@pytest.mark.parametrize("status", [500, 404])
def test_a_refused_alert_is_logged_without_the_address(
    hook: str, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    _Hook.status = status
    assert send_alert(_alert(), webhook_url=hook, timeout_s=5) is False
    assert f"HTTP Error {status}" in caplog.text and "not delivered" in caplog.text
    _assert_no_address(caplog.text, hook)


@pytest.mark.parametrize(
    "url",
    [
        f"http://127.0.0.1:9/services/{SECRET}",  # nothing listens: connection refused
        f"hooks.example/services/{SECRET}",  # no scheme: urllib's error quotes the whole address
        f"http://no-such-host.invalid/services/{SECRET}",
    ],
)
def test_an_unreachable_or_malformed_webhook_is_logged_without_the_address(
    url: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    assert send_alert(_alert(), webhook_url=url, timeout_s=2) is False
    assert "alert webhook (SHADOWGATE_ALERT_WEBHOOK_URL) failed" in caplog.text
    if "://" not in url:
        assert "ValueError: unknown url type: '<webhook>'" in caplog.text  # redacted, not left out
    _assert_no_address(caplog.text, url)
    out = capsys.readouterr()
    _assert_no_address(out.out + out.err, url)


def test_a_warning_is_logged_as_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    send_alert(_alert(severity="warning"), webhook_url=None)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


def test_the_task_failure_alert_names_its_condition() -> None:
    alert = task_failure_alert(dag_id="d", task_id="t", run_id="r1", try_number=4, error=ConnectionError("down"))
    assert (alert.kind, alert.subject, alert.condition) == ("task_failure", "d.t", "r1")
    assert alert.text == "run r1, try 4: ConnectionError: down"


# ------------------------------------------------------------------------------------------------ episodes


def _check(holds: bool) -> Check:
    alert = _alert(kind="auc_drop", subject="champion@3", condition="final label") if holds else None
    return Check("auc_drop", "champion@3", "final label", alert)


def _run(holds: list[bool], *, delivered: bool = True) -> tuple[list[int], AlertState | None]:
    """The weeks whose run sends, for a condition holding or not on weekly runs, every run done twice (a re-run)."""
    state: AlertState | None = None
    sends = []
    for week, h in enumerate(holds):
        at = T0 + dt.timedelta(weeks=week)
        for _ in range(2):
            state, send = advance(state, _check(h), at=at)
            if send and state is not None:
                sends.append(week)
                if delivered:
                    state = dataclasses.replace(state, notified_at=at)
    return sends, state


def test_a_condition_is_sent_when_it_begins_to_hold_and_again_only_after_it_resolved() -> None:
    sends, state = _run([False, True, True, True, False, False, True, True])
    assert sends == [1, 6]
    assert state is not None
    assert (state.times_raised, state.times_seen, state.first_raised_at, state.resolved_at) == (
        2,
        2,
        T0 + dt.timedelta(weeks=6),
        None,
    )
    assert state.alert_key == alert_key("auc_drop", "champion@3", "final label")


def test_a_failed_send_is_retried_by_every_run_while_the_condition_holds() -> None:
    sends, _ = _run([True, True, False], delivered=False)
    assert sends == [0, 0, 1, 1]


def test_an_older_run_replayed_after_a_resolution_changes_nothing() -> None:
    sends, state = _run([True, True, False])
    assert sends == [0]
    assert state is not None and state.resolved_at == T0 + dt.timedelta(weeks=2)
    again, send = advance(state, _check(True), at=T0 + dt.timedelta(weeks=1))  # a backfill of week 1
    assert (again, send) == (state, False)


@given(st.lists(st.booleans(), max_size=30))
def test_sends_are_the_episodes(holds: list[bool]) -> None:
    sends, state = _run(holds)
    starts = [w for w, h in enumerate(holds) if h and (w == 0 or not holds[w - 1])]
    assert sends == starts
    if starts:
        assert state is not None and state.times_raised == len(starts)
        assert (state.resolved_at is None) == holds[-1]
    else:
        assert state is None


def test_a_condition_not_yet_cleared_keeps_its_episode_open() -> None:
    state, send = advance(None, _check(True), at=T0)
    assert send and state is not None
    hovering = Check("auc_drop", "champion@3", "final label", None, cleared=False)
    after, send = advance(state, hovering, at=T0 + dt.timedelta(weeks=1))
    assert (after, send) == (state, False)  # neither counted nor resolved
    again, send = advance(after, _check(True), at=T0 + dt.timedelta(weeks=2))
    assert again is not None and (again.times_seen, again.times_raised, send) == (2, 1, state.notified_at is None)
