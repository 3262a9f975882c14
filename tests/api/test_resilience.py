"""Faults the service must absorb: alias moves under load, Redis outages, MLflow down, broken challengers, no model."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from shadowgate.config import MLflowSettings
from shadowgate.serving.models import MlflowModelSource
from shadowgate.serving.runtime import Runtime
from shadowgate.serving.scorer import CompiledModel
from tests.api.conftest import ADMIN, CHALLENGER_B, INGEST, Registry, make_client
from tests.api.faulty_models import Broken, Hanging, Slow
from tests.api.test_decisions import URL, _settle, _stream, _tx
from tests.redis_server import RedisServer

Factory = Callable[..., Callable[[], Runtime]]


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_alias_move_under_load_swaps_with_zero_failed_requests(runtime_factory: Factory, registry: Registry) -> None:
    from mlflow import MlflowClient

    mlflow_client = MlflowClient(tracking_uri=registry.mlflow.tracking_uri, registry_uri=registry.mlflow.tracking_uri)
    old, new = registry.versions["champion"], registry.versions[CHALLENGER_B]
    seen: list[tuple[int, str | None]] = []
    stop = threading.Event()

    with make_client(runtime_factory()) as client:

        def hammer(worker: int) -> None:
            i = 0
            while not stop.is_set():
                answer = client.post(URL, json=_tx(worker * 100_000 + i))
                seen.append((answer.status_code, answer.json().get("model", {}).get("version")))
                i += 1

        threads = [threading.Thread(target=hammer, args=(w,)) for w in range(3)]
        for t in threads:
            t.start()
        try:
            while len(seen) < 150:
                stop.wait(0.05)
            mlflow_client.set_registered_model_alias("bnpl_default", "champion", new)
            assert client.app.state.runtime.models.wait_for("champion", new, timeout_s=30)  # type: ignore[attr-defined]
            settled = len(seen)
            while len(seen) < settled + 150:
                stop.wait(0.05)
            served_after = client.get("/v1/models").json()["aliases"]["champion"]["version"]
        finally:
            stop.set()
            for t in threads:
                t.join()
            mlflow_client.set_registered_model_alias("bnpl_default", "champion", old)
        statuses = {status for status, _ in seen}
        versions = [version for _, version in seen]
        assert statuses == {200}
        assert versions[0] == old
        assert set(versions) == {old, new}
        # Once swapped, never back: the tail (requests started after the swap was observed) is all new.
        assert set(versions[settled + 10 :]) == {new}
        assert served_after == new


def test_redis_outage_loses_nothing_and_fails_no_request(client: TestClient, redis_server: RedisServer) -> None:
    ids: list[str] = []
    statuses: set[int] = set()
    for i in range(3000):
        if i == 800:
            redis_server.stop()  # SIGKILL by PID mid-traffic
        if i == 2200:
            redis_server.start()  # same port, same AOF directory
        answer = client.post(URL, json=_tx(i))
        statuses.add(answer.status_code)
        ids.append(answer.json()["request_id"])
    assert statuses == {200}
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    assert runtime.shadow.flush(60.0)
    stats = runtime.shadow.stats()
    assert stats.written == 3000 and stats.dead_lettered == 0 and runtime.shadow.pending_bytes == 0
    events = _stream(redis_server, "shadowgate:predictions")
    assert len(events) == 3000
    assert [e["event_id"] for e in events] == ids  # exactly once, in order


def test_mlflow_down_at_start_serves_last_known_good_from_disk(runtime_factory: Factory, registry: Registry) -> None:
    with make_client(runtime_factory()) as first:
        expected = first.post(URL, json=_tx(7)).json()
    dead = MLflowSettings(tracking_uri=f"http://127.0.0.1:{_dead_port()}", model_name="bnpl_default")
    with make_client(runtime_factory(mlflow=dead)) as second:
        ready = second.get("/health/ready", headers=ADMIN).json()
        assert ready["status"] == "ready"
        assert ready["models"] == registry.versions
        assert set(ready["models_from"].values()) == {"cache"}
        assert ready["registry_up"] is False
        answer = second.post(URL, json=_tx(7)).json()
        assert answer["risk_score"] == expected["risk_score"]
        assert answer["model"] == expected["model"]


class _BreakingSource(MlflowModelSource):
    """The real registry, except that one version loads as a broken model."""

    def __init__(self, *, broken_version: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.broken_version = broken_version

    def fetch(self, version: str) -> CompiledModel:
        return Broken() if version == self.broken_version else super().fetch(version)  # type: ignore[return-value]


def test_a_failing_challenger_never_touches_the_champions_answer(
    runtime_factory: Factory, registry: Registry, redis_server: RedisServer
) -> None:
    source = _BreakingSource(
        broken_version=registry.versions["challenger"],
        tracking_uri=registry.mlflow.tracking_uri,
        model_name="bnpl_default",
    )
    with make_client(runtime_factory(source=source)) as client:
        answers = [client.post(URL, json=_tx(i)) for i in range(100)]
        assert {a.status_code for a in answers} == {200}
        assert {a.json()["model"]["alias"] for a in answers} == {"champion"}
        _settle(client)
        events = _stream(redis_server, "shadowgate:predictions")
        assert len(events) == 100
        statuses = [{s["alias"]: s["status"] for s in e["scores"]} for e in events]
        assert statuses[0] == {"champion": "ok", "challenger": "error", CHALLENGER_B: "ok"}
        # After the first failure the broken model is benched: later events record it as skipped, the rest go on.
        assert all(s["challenger"] in {"error", "skipped"} and s[CHALLENGER_B] == "ok" for s in statuses)
        metrics = client.get("/metrics").text
        assert 'shadowgate_model_failures_total{alias="challenger",reason="error"}' in metrics
        assert client.get("/v1/models").json()["benched"].keys() == {"challenger"}


def test_no_model_at_all_answers_with_the_fallback_policy(
    runtime_factory: Factory, registry: Registry, tmp_path: Path
) -> None:
    empty = MLflowSettings(tracking_uri=registry.mlflow.tracking_uri, model_name="no_such_model")
    with make_client(runtime_factory(mlflow=empty)) as client:
        assert client.get("/health/ready", headers=ADMIN).status_code == 503
        answer = client.post(URL, json=_tx(1, amount=50.0))
        assert answer.status_code == 200
        body = answer.json()
        assert body["fallback"] is True
        assert body["model"] == {"alias": None, "version": None}
        assert body["risk_score"] is None
        assert body["reason_codes"][0] == "FALLBACK_POLICY"
        _settle(client)
        text = client.get("/metrics").text
        assert "shadowgate_fallback_decisions_total 1.0" in text
    assert (
        json.loads((tmp_path / "home" / "serving" / "model_cache" / "no_such_model" / "aliases.json").read_text())[
            "aliases"
        ]
        == {}
    )


class _SlowingSource(MlflowModelSource):
    def __init__(self, *, slow_version: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.slow_version = slow_version

    def fetch(self, version: str) -> CompiledModel:
        model = super().fetch(version)
        return Slow(model, 0.02) if version == self.slow_version else model  # type: ignore[return-value]


def test_a_slow_challenger_is_benched_and_never_decides(
    runtime_factory: Factory, registry: Registry, redis_server: RedisServer
) -> None:
    source = _SlowingSource(
        slow_version=registry.versions[CHALLENGER_B],
        tracking_uri=registry.mlflow.tracking_uri,
        model_name="bnpl_default",
    )
    with make_client(runtime_factory(source=source, model_budget_ms=5.0)) as client:
        answers = [client.post(URL, json=_tx(i)).json() for i in range(30)]
        _settle(client)
        answers += [client.post(URL, json=_tx(i)).json() for i in range(30, 60)]
        assert {a["model"]["alias"] for a in answers} == {"champion"}
        _settle(client)
        events = _stream(redis_server, "shadowgate:predictions")
        assert len(events) == 60
        slow = [next(s for s in e["scores"] if s["alias"] == CHALLENGER_B) for e in events]
        statuses = [s["status"] for s in slow]
        # Every row of the first (over-budget) micro-batch is a timeout; the model is benched after that batch and
        # never scored again within the cool-down.
        first_batch = statuses.index("skipped") if "skipped" in statuses[:30] else 30
        assert first_batch >= 1
        assert set(statuses[:first_batch]) == {"timeout"}
        assert slow[0]["error"].endswith("budget 5 ms")
        assert set(statuses[first_batch:]) == {"skipped"}
        assert {s["error"] for s in slow[first_batch:]} == {"benched"}
        assert all(next(s for s in e["scores"] if s["alias"] == "challenger")["status"] == "ok" for e in events)
        assert CHALLENGER_B in client.get("/v1/models").json()["benched"]


def test_a_killed_shadow_process_is_replaced_and_no_decision_fails(
    runtime_factory: Factory, redis_server: RedisServer
) -> None:
    with make_client(runtime_factory()) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        first = runtime.shadow.pid
        assert first is not None
        ids: list[str] = []
        for i in range(300):
            if i == 100:
                os.kill(first, signal.SIGKILL)
            answer = client.post(URL, json=_tx(i))
            assert answer.status_code == 200
            ids.append(answer.json()["request_id"])
        _settle(client)
        assert runtime.shadow.restarts == 1
        ready = client.get("/health/ready", headers=ADMIN).json()["shadow_process"]
        assert ready["up"] is True and ready["pid"] not in (None, first)
        events = [e["event_id"] for e in _stream(redis_server, "shadowgate:predictions")]
        # The replacement reads on from the position Redis holds: what the dead one had not committed comes once.
        assert events == ids
        text = client.get("/metrics").text
        assert "shadowgate_shadow_process_restarts_total 1.0" in text


class _HangingSource(MlflowModelSource):
    def __init__(self, *, hanging_version: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hanging_version = hanging_version

    def fetch(self, version: str) -> CompiledModel:
        model = super().fetch(version)
        return Hanging(model) if version == self.hanging_version else model  # type: ignore[return-value]


def test_a_hanging_challenger_is_cut_loose_and_decisions_go_on(
    runtime_factory: Factory, registry: Registry, redis_server: RedisServer
) -> None:
    source = _HangingSource(
        hanging_version=registry.versions[CHALLENGER_B],
        tracking_uri=registry.mlflow.tracking_uri,
        model_name="bnpl_default",
    )
    with make_client(runtime_factory(source=source, shadow_stall_timeout_s=3.0)) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        hung = runtime.shadow.pid
        answers = [client.post(URL, json=_tx(i)) for i in range(20)]
        assert {a.status_code for a in answers} == {200}
        deadline = time.monotonic() + 30
        while runtime.shadow.restarts == 0 and time.monotonic() < deadline:
            assert client.post(URL, json=_tx(999)).status_code == 200  # the hang never reaches the customer
            time.sleep(0.1)
        assert runtime.shadow.restarts == 1
        assert runtime.shadow.pid != hung
        later = [client.post(URL, json=_tx(1000 + i)).json()["request_id"] for i in range(20)]
        _settle(client)
        events = {e["event_id"]: e for e in _stream(redis_server, "shadowgate:predictions")}
        # The replacement benches every challenger for a cool-down: their scores are skipped, the events are logged.
        for request_id in later:
            scores = {s["alias"]: s for s in events[request_id]["scores"]}
            assert scores["champion"]["status"] == "ok"
            assert {scores[a]["status"] for a in ("challenger", CHALLENGER_B)} == {"skipped"}
            # Benched; or, for requests the replacement read in one batch with the stalled ones it re-reads from the
            # journal (seconds old by then), shed as backlog first. Either way the hang never scores again.
            assert scores[CHALLENGER_B]["error"] in ("benched", "shadow_backlog")
        assert set(client.get("/v1/models").json()["benched"]) == {"challenger", CHALLENGER_B}


def test_overload_never_hangs_the_server_a_stopped_shadow_process_costs_nothing(
    runtime_factory: Factory, redis_server: RedisServer
) -> None:
    with make_client(runtime_factory()) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        pid = runtime.shadow.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # the shadow process stops doing anything at all
        try:
            ids = []
            started = time.monotonic()
            for i in range(500):
                answer = client.post(URL, json=_tx(i))
                assert answer.status_code == 200
                ids.append(answer.json()["request_id"])
                if i % 100 == 0:
                    assert client.get("/health/live").status_code == 200
                    assert client.get("/metrics").status_code == 200
            assert time.monotonic() - started < 60  # answered at the service's pace, nothing waited for the child
            assert runtime.shadow.pending_bytes > 0
        finally:
            os.kill(pid, signal.SIGCONT)
        _settle(client)
        assert [e["event_id"] for e in _stream(redis_server, "shadowgate:predictions")] == ids


def test_a_full_journal_answers_503_with_retry_after_and_health_still_answers(
    runtime_factory: Factory, redis_server: RedisServer
) -> None:
    redis_server.stop()  # nothing can be committed: the journal only grows
    with make_client(runtime_factory(journal_max_pending_mb=0.05)) as client:
        statuses = [client.post(URL, json=_tx(i)) for i in range(200)]
        answered = [a.json()["request_id"] for a in statuses if a.status_code == 200]
        refused = [a for a in statuses if a.status_code == 503]
        assert answered and refused and len(answered) + len(refused) == 200
        assert all(a.headers["retry-after"] == "5" for a in refused)
        assert "nothing was recorded" in refused[0].json()["detail"]
        # An outcome is smaller than a decision: it may still fit where a decision did not; the limit refuses outcomes
        # too once they would pass it (a record is taken whole or not at all).
        outcome_codes = []
        for k in range(200):
            outcome = {"transaction_id": f"tx_{k:07d}", "event_type": "default",
                       "event_timestamp": "2026-03-02T14:05:00Z"}  # fmt: skip
            outcome_codes.append(client.post("/v1/outcomes", json=outcome, headers=INGEST).status_code)
            if outcome_codes[-1] == 503:
                break
        assert outcome_codes[-1] == 503 and set(outcome_codes[:-1]) <= {202}
        assert client.get("/health/live").status_code == 200
        ready = client.get("/health/ready", headers=ADMIN).json()
        assert ready["journal"]["refused"] == len(refused) + 1 and ready["redis"]["up"] is False
        assert "shadowgate_journal_refused_total" in client.get("/metrics").text
        redis_server.start()
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        assert runtime.shadow.flush(60.0)
        assert client.post(URL, json=_tx(999)).status_code == 200  # room again
        _settle(client)
        events = [e["event_id"] for e in _stream(redis_server, "shadowgate:predictions")]
        assert events[: len(answered)] == answered and len(events) == len(answered) + 1
