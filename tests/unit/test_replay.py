"""The replay client against a fake API (httpx.MockTransport): order, what is sent, retries, errors, the window.

The real API is in tests/api/test_replay.py; here every answer is chosen, so retries and failures are exact.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pandas as pd
import pytest

from shadowgate.config import SimulationSettings
from shadowgate.local.stack import LocalApi, local_api
from shadowgate.simulation import SimulationResult, simulate
from shadowgate.simulation.replay import (
    DECISION_PATH,
    OUTCOME_BATCH_PATH,
    OUTCOME_PATH,
    ErrorCount,
    Replayer,
    ReplayError,
    RetryPolicy,
    _retry_after,
    outcome_bodies,
    replay,
    select_window,
)

KEY = "ingest-secret"
DECISION_OF = ("approve", "deny", "manual_review")
"""The fake API's decision for transaction number n: DECISION_OF[n % 3]."""


@pytest.fixture(scope="module")
def small() -> SimulationResult:
    return simulate(SimulationSettings(transactions=900, customers=120, days=14, drift_start_day=14, seed=3))


def _number(transaction_id: str) -> int:
    return int(transaction_id.rsplit("_", 1)[1])


@dataclass
class FakeApi:
    """Answers like the API; ``script[(path, transaction_id)]`` lists what the first attempts get instead."""

    script: dict[tuple[str, str], list[Callable[[httpx.Request], httpx.Response]]] = field(default_factory=dict)
    ready: int = 200
    key: str = KEY
    key_ok_until: int | None = None
    """Accept the key on this many outcome posts (the probe included), then answer 401: a key rotated mid-run."""
    log: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    outcome_posts: int = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/health/ready":
            return httpx.Response(self.ready, json={"status": "ready" if self.ready == 200 else "not_ready"})
        body = orjson.loads(request.content)
        if path == OUTCOME_BATCH_PATH:  # each outcome as if posted alone; a scripted answer for one is the batch's
            items = body.get("outcomes") or []
            with self.lock:
                self.outcome_posts += 1
                posts = self.outcome_posts
                self.log.extend((OUTCOME_PATH, item) for item in items)
                override = None
                for item in items:
                    scripted = self.script.get((OUTCOME_PATH, str(item.get("transaction_id"))))
                    if scripted and override is None:
                        override = scripted.pop(0)
            if override is not None:
                return override(request)
            refused = self.key_ok_until is not None and posts > self.key_ok_until
            if request.headers.get("X-Ingest-Key") != self.key or refused:
                return httpx.Response(401, json={"detail": "a valid X-Ingest-Key header is required"})
            return httpx.Response(
                202, json={"accepted": len(items), "event_ids": [f"ev-{i}" for i in range(len(items))]}
            )
        with self.lock:
            self.log.append((path, body))
            if path == OUTCOME_PATH:
                self.outcome_posts += 1
                posts = self.outcome_posts
            scripted = self.script.get((path, str(body.get("transaction_id"))))
            override = scripted.pop(0) if scripted else None
        if override is not None:
            return override(request)
        if path == OUTCOME_PATH:
            refused = self.key_ok_until is not None and posts > self.key_ok_until
            if request.headers.get("X-Ingest-Key") != self.key or refused:
                return httpx.Response(401, json={"detail": "a valid X-Ingest-Key header is required"})
            if not body:
                return httpx.Response(422, json={"detail": [{"type": "missing", "loc": ["body", "transaction_id"]}]})
            return httpx.Response(202, json={"event_id": f"ev-{body['transaction_id']}-{body['event_type']}"})
        decision = DECISION_OF[_number(body["transaction_id"]) % 3]
        answer = {"transaction_id": body["transaction_id"], "decision": decision, "fallback": False}
        return httpx.Response(200, json=answer)

    def sent(self, path: str) -> list[dict[str, object]]:
        return [body for p, body in self.log if p == path and body]


def _replayer(api: FakeApi, *, sleeps: list[float] | None = None, **options: Any) -> Replayer:
    record = sleeps.append if sleeps is not None else (lambda _s: None)
    transport = httpx.MockTransport(api)
    return Replayer(api_url="http://api.test", ingest_key=KEY, transport=transport, sleep=record, **options)


def _stamp(value: pd.Timestamp) -> str:
    return value.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def test_decisions_in_time_order_then_only_the_approved_purchases_outcomes_in_the_order_they_became_known(
    small: SimulationResult,
) -> None:
    api = FakeApi()
    summary = replay(transactions=small.transactions, outcomes=small.outcomes, replayer=_replayer(api, concurrency=1))

    tx = small.transactions.sort_values("event_timestamp", kind="stable")
    decisions = api.sent(DECISION_PATH)
    # Every purchase once, in simulated time, at its simulated time, with the contract's fields only.
    assert [d["transaction_id"] for d in decisions] == tx["transaction_id"].tolist()
    assert [d["event_timestamp"] for d in decisions] == [_stamp(t) for t in tx["event_timestamp"]]
    first = tx.iloc[0]
    assert decisions[0] == {**first.to_dict(), "event_timestamp": _stamp(first["event_timestamp"])}
    # Every decision before the first outcome.
    paths = [p for p, body in api.log if body]
    assert paths == [DECISION_PATH] * len(tx) + [OUTCOME_PATH] * (len(paths) - len(tx))

    approved = {t for t in tx["transaction_id"] if _number(t) % 3 == 0}
    funded = small.outcomes[small.outcomes["transaction_id"].isin(approved)]
    funded = funded.sort_values(["event_timestamp", "transaction_id"], kind="stable")
    outcomes = api.sent(OUTCOME_PATH)
    assert outcomes == [
        {"transaction_id": r.transaction_id, "event_type": r.event_type, "event_timestamp": _stamp(r.event_timestamp),
         "instalment_number": r.instalment, "amount": r.amount, "delivered_at": _stamp(r.event_timestamp)}
        for r in funded.itertuples()
    ]  # fmt: skip
    assert len(funded) > 100

    n = len(tx)
    assert (summary.purchases, summary.decisions_answered) == (n, n)
    assert (summary.approved, summary.denied, summary.manual_review) == (
        len(approved),
        sum(_number(t) % 3 == 1 for t in tx["transaction_id"]),
        sum(_number(t) % 3 == 2 for t in tx["transaction_id"]),
    )
    assert (summary.outcome_rows, summary.outcomes_sent) == (len(small.outcomes), len(funded))
    assert summary.outcomes_skipped == len(small.outcomes) - len(funded)
    assert (summary.errors, summary.retries, summary.stopped, summary.ok) == ((), 0, None, True)
    rendered = summary.render()
    assert f"{n:,} answered of {n:,} purchases" in rendered and "errors     none" in rendered


def test_the_window_is_half_open_and_outcomes_follow_their_purchases(small: SimulationResult) -> None:
    times = small.transactions["event_timestamp"].sort_values(ignore_index=True)
    # A boundary on a purchase instant that no earlier purchase shares: the purchases before it are exactly k.
    k = next(i for i in range(200, len(times)) if times[i] > times[i - 1])
    start, end = times[0].to_pydatetime(), times[k].to_pydatetime()

    chosen, their, lower, upper = select_window(small.transactions, small.outcomes, start=start, end=end)

    assert len(chosen) == k and chosen["event_timestamp"].max() < times[k]
    assert (lower, upper) == (start, end)
    assert set(their["transaction_id"]) <= set(chosen["transaction_id"])
    assert len(their) == small.outcomes["transaction_id"].isin(chosen["transaction_id"]).sum()
    assert their["event_timestamp"].is_monotonic_increasing
    with pytest.raises(ReplayError, match="no purchase in"):
        select_window(small.transactions, small.outcomes, start=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    with pytest.raises(ReplayError, match="empty window"):
        select_window(small.transactions, small.outcomes, start=end, end=start)


def _window(small: SimulationResult, purchases: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    chosen, their, _, _ = select_window(small.transactions, small.outcomes)
    head = chosen.iloc[:purchases]
    return head, their[their["transaction_id"].isin(head["transaction_id"])]


def _unavailable(retry_after: str | None) -> Callable[[httpx.Request], httpx.Response]:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return lambda _r: httpx.Response(503, json={"detail": "the decision log is full"}, headers=headers)


def _raise(error: type[httpx.TransportError]) -> Callable[[httpx.Request], httpx.Response]:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error("simulated", request=request)

    return fail


def test_a_503_is_sent_again_after_its_retry_after(small: SimulationResult) -> None:
    tx, _ = _window(small, 30)
    target = tx["transaction_id"].iloc[5]
    api = FakeApi(script={(DECISION_PATH, target): [_unavailable("2"), _unavailable("3")]})
    sleeps: list[float] = []
    result = _replayer(api, sleeps=sleeps, concurrency=3).send_decisions(tx)

    assert sleeps == [2.0, 3.0]  # exactly what the API asked for, nothing else waited
    assert [d["transaction_id"] for d in api.sent(DECISION_PATH)].count(target) == 3
    assert (result.answered, result.retries, result.errors, result.unconfirmed_attempts) == (30, 2, (), 0)


def test_connection_errors_are_retried_with_backoff_and_lost_answers_are_counted(small: SimulationResult) -> None:
    tx, outcomes = _window(small, 60)
    never_arrived = tx["transaction_id"].iloc[1]  # connect failed: nothing reached the API
    lost_answer = tx["transaction_id"].iloc[2]  # sent, answer lost: the API may have logged it
    funded = outcomes["transaction_id"][outcomes["transaction_id"].map(_number) % 3 == 0].iloc[0]
    api = FakeApi(
        script={
            (DECISION_PATH, never_arrived): [_raise(httpx.ConnectError), _raise(httpx.ConnectTimeout)],
            (DECISION_PATH, lost_answer): [_raise(httpx.ReadTimeout)],
            (OUTCOME_PATH, funded): [_raise(httpx.RemoteProtocolError)],
        }
    )
    sleeps: list[float] = []
    policy = RetryPolicy(backoff_s=0.5, max_backoff_s=0.75)
    summary = replay(transactions=tx, outcomes=outcomes, replayer=_replayer(api, sleeps=sleeps, retry=policy))

    assert (summary.decisions_answered, summary.retries, summary.errors) == (60, 4, ())
    assert summary.unconfirmed_decision_attempts == 1  # the read timeout; an outcome re-sent is harmless
    # Backoff: attempt 1 waits 0.25–0.5 s, attempt 2 0.375–0.75 s (capped); three first attempts, one second.
    assert len(sleeps) == 4 and all(0.25 <= s <= 0.75 for s in sleeps)
    assert sum(s > 0.5 for s in sleeps) <= 1
    assert "1 decision attempt(s) unanswered (may be logged twice)" in summary.render()
    # The batch holding the purchase's outcomes lost its answer and was sent again, whole: each outcome twice (the API
    # records each once: their ids are derived).
    assert [o["transaction_id"] for o in api.sent(OUTCOME_PATH)].count(funded) == 2 * outcomes[
        outcomes["transaction_id"] == funded
    ].shape[0]


def test_a_4xx_is_counted_with_its_first_body_and_never_sent_again(small: SimulationResult) -> None:
    tx, outcomes = _window(small, 90)
    refused = [t for t in tx["transaction_id"] if _number(t) % 3 == 0][:2]  # would have been approved
    api = FakeApi(
        script={
            (DECISION_PATH, refused[0]): [lambda _r: httpx.Response(422, json={"detail": "first refusal"})],
            (DECISION_PATH, refused[1]): [lambda _r: httpx.Response(422, json={"detail": "second refusal"})],
        }
    )
    summary = replay(transactions=tx, outcomes=outcomes, replayer=_replayer(api, concurrency=1))

    sent = [d["transaction_id"] for d in api.sent(DECISION_PATH)]
    assert sent == tx["transaction_id"].tolist()  # each once: no retry of a 4xx
    assert summary.errors == (ErrorCount("decisions", "422", 2, '{"detail":"first refusal"}'),)
    assert (summary.decisions_answered, summary.retries, summary.ok) == (88, 0, False)
    # A refused purchase was not approved: its outcomes are skipped, not sent.
    assert not {o["transaction_id"] for o in api.sent(OUTCOME_PATH)} & set(refused)
    not_approved = outcomes["transaction_id"].map(lambda t: _number(t) % 3 != 0 or t in refused)
    assert summary.outcomes_skipped == not_approved.sum()
    assert "decisions 422: 2  first: " in summary.render()


def test_an_ingest_key_refused_mid_run_stops_the_outcome_pass_at_the_first_401(small: SimulationResult) -> None:
    tx, outcomes = _window(small, 300)
    api = FakeApi(key_ok_until=3)  # the probe and two batches pass, then the key is refused
    summary = replay(transactions=tx, outcomes=outcomes, replayer=_replayer(api, concurrency=1, outcome_batch=50))

    assert len(api.sent(OUTCOME_PATH)) == 150  # two batches accepted, one refused, nothing after it
    assert summary.outcomes_sent == 100
    assert [(e.phase, e.status, e.count) for e in summary.errors] == [("outcomes", "401", 1)]
    assert summary.stopped is not None and summary.stopped.startswith("outcomes: 401")
    assert summary.retries == 0 and not summary.ok


def test_retries_end_after_max_attempts_and_the_503_is_counted(small: SimulationResult) -> None:
    tx, _ = _window(small, 10)
    target = tx["transaction_id"].iloc[0]
    api = FakeApi(script={(DECISION_PATH, target): [_unavailable("1")] * 10})
    sleeps: list[float] = []
    result = _replayer(api, sleeps=sleeps, retry=RetryPolicy(max_attempts=3)).send_decisions(tx)

    assert [d["transaction_id"] for d in api.sent(DECISION_PATH)].count(target) == 3
    assert sleeps == [1.0, 1.0]
    assert result.errors == (ErrorCount("decisions", "503", 1, '{"detail":"the decision log is full"}'),)
    assert (result.answered, result.retries) == (9, 2)


@pytest.mark.parametrize(
    ("api", "message"),
    [
        (FakeApi(ready=503), "is not ready"),
        (FakeApi(key="another key"), "refused the ingest key"),
    ],
)
def test_preflight_refuses_before_any_decision_is_sent(small: SimulationResult, api: FakeApi, message: str) -> None:
    tx, outcomes = _window(small, 10)
    with pytest.raises(ReplayError, match=message):
        replay(transactions=tx, outcomes=outcomes, replayer=_replayer(api))
    assert api.sent(DECISION_PATH) == []


def test_preflight_names_an_api_that_does_not_answer_and_a_missing_key(small: SimulationResult) -> None:
    tx, outcomes = _window(small, 10)

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    unreachable = Replayer(api_url="http://api.test", ingest_key=KEY, transport=httpx.MockTransport(down))
    with pytest.raises(ReplayError, match=r"does not answer.*make up"):
        replay(transactions=tx, outcomes=outcomes, replayer=unreachable)
    keyless = Replayer(api_url="http://api.test", transport=httpx.MockTransport(FakeApi()))
    with pytest.raises(ReplayError, match="no ingest key"):
        replay(transactions=tx, outcomes=outcomes, replayer=keyless)
    # Without outcomes no key is needed.
    summary = replay(transactions=tx, outcomes=outcomes, replayer=keyless, send_outcomes=False)
    assert (summary.decisions_answered, summary.outcomes_sent, summary.ok) == (10, 0, True)
    assert "not sent (--no-outcomes)" in summary.render()


def test_rate_limits_requests_over_all_workers(small: SimulationResult) -> None:
    tx, _ = _window(small, 21)
    api = FakeApi()
    started = time.monotonic()
    Replayer(api_url="http://api.test", transport=httpx.MockTransport(api), concurrency=4, rate=50.0).send_decisions(tx)
    assert time.monotonic() - started >= 20 / 50  # 21 requests: 20 intervals of 20 ms


def test_retry_after_reads_seconds_and_http_dates_and_is_capped() -> None:
    policy = RetryPolicy(max_retry_after_s=30.0)
    assert _retry_after("2", policy) == 2.0
    assert _retry_after("600", policy) == 30.0
    assert _retry_after(None, policy) is None and _retry_after("soon", policy) is None
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10)
    seconds = _retry_after(later.strftime("%a, %d %b %Y %H:%M:%S GMT"), policy)
    assert seconds is not None and 8.0 <= seconds <= 10.0


def test_a_worker_that_crashes_ends_the_pass_with_its_error_not_a_partial_success(small: SimulationResult) -> None:
    tx, _ = _window(small, 50)

    class BrokenProgress:
        def start(self, phase: str, total: int) -> None:
            self.done = 0

        def advance(self, phase: str, count: int = 1) -> None:
            self.done += count
            if self.done == 10:
                raise RuntimeError("progress bar broke")

    api = FakeApi()
    with pytest.raises(RuntimeError, match="progress bar broke"):
        _replayer(api, concurrency=2, progress=BrokenProgress()).send_decisions(tx)
    assert len(api.sent(DECISION_PATH)) < 50


def test_the_local_apis_key_is_found_as_make_up_wrote_it_and_never_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHADOWGATE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHADOWGATE_API_PORT", "8123")
    monkeypatch.delenv("SHADOWGATE_API_INGEST_KEY", raising=False)
    key_file = tmp_path / "home" / "secrets" / "ingest_key"

    assert local_api(repo_root=tmp_path) == LocalApi(url="http://127.0.0.1:8123", ingest_key=None)
    assert not key_file.exists()  # a key made now would not be the one the API runs with
    key_file.parent.mkdir(parents=True)
    key_file.write_text("from-make-up\n")
    assert local_api(repo_root=tmp_path).ingest_key == "from-make-up"
    monkeypatch.setenv("SHADOWGATE_API_INGEST_KEY", "from-the-environment")
    assert local_api(repo_root=tmp_path).ingest_key == "from-the-environment"


def test_the_command_refuses_unusable_options_before_contacting_an_api(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from shadowgate.cli import app

    api = ["--api-url", "http://127.0.0.1:9", "--ingest-key", "k"]
    both = CliRunner().invoke(app, ["replay", "--data", str(tmp_path), "--transactions", "500", *api])
    assert both.exit_code == 2 and "either --data or the simulation options" in both.output
    short = CliRunner().invoke(app, ["replay", "--transactions", "500", "--days", "7", *api])
    assert short.exit_code == 2 and "invalid simulation options" in short.output
    empty = CliRunner().invoke(app, ["replay", "--data", str(tmp_path), *api])
    assert empty.exit_code == 1 and f"no simulated history in {tmp_path}" in empty.output
    # A two-week world needs no --drift-start-day; port 9 answers nobody, which the preflight says.
    down = CliRunner().invoke(app, ["replay", "--transactions", "500", "--customers", "50", "--days", "14", *api])
    assert down.exit_code == 1 and "does not answer" in down.output and "simulated" in down.output


def test_outcomes_state_their_simulated_delivery_a_lagging_feed_s_own_and_never_one_in_the_future(
    small: SimulationResult,
) -> None:
    from shadowgate.simulation.world import jittered_feed

    rows = small.outcomes.head(200)
    feed = jittered_feed(rows, max_delay=dt.timedelta(hours=6), seed=3)
    lag = feed["delivered_at"] - rows["event_timestamp"]
    flagged = feed["event_timestamp"] - rows["event_timestamp"]
    # Flagged and delivered 1 s to 3 h after the simulator's instant each: 2 s to 6 h in all, never before it.
    assert flagged.min() >= pd.Timedelta(seconds=1) and flagged.max() <= pd.Timedelta(hours=3)
    assert lag.min() >= pd.Timedelta(seconds=2) and lag.max() <= pd.Timedelta(hours=6)
    assert (feed["delivered_at"] >= feed["event_timestamp"]).all() and lag.nunique() == len(rows)
    assert jittered_feed(rows, max_delay=dt.timedelta(hours=6), seed=3).equals(feed)  # reproducible

    bodies = [orjson.loads(body) for _, body in outcome_bodies(feed)]
    stamp = "%Y-%m-%dT%H:%M:%S.%fZ"
    assert [b["delivered_at"] for b in bodies] == feed["delivered_at"].dt.strftime(stamp).tolist()
    assert [b["event_timestamp"] for b in bodies] == feed["event_timestamp"].dt.strftime(stamp).tolist()
    # A simulated delivery after the wall clock is not stated (the API would refuse it): received, it arrives then.
    future = rows.assign(event_timestamp=pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=1))
    assert all("delivered_at" not in orjson.loads(body) for _, body in outcome_bodies(future))
