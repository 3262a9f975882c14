"""The OpenAPI document is the contract: schemathesis holds the running app to it, as a new user's tooling would.

The real app (real MLflow store, real Redis, its shadow process) is driven in process over ASGI by schemathesis's own
engine, the one behind ``schemathesis run``, with every testing phase (examples, coverage, fuzzing, stateful) and
the checks the issue names. Requests carry both keys, so the authenticated paths are reached; the 401s are held to
their exact answers by ``test_outcomes.py`` and ``test_operations.py``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from schemathesis.engine import Status, StopReason, events
from schemathesis.engine.run import PhaseName
from schemathesis.python.asgi import shutdown_lifespans

from shadowgate.config import ApiSettings
from shadowgate.serving.runtime import Runtime
from tests.api.conftest import ADMIN, ADMIN_KEY, INGEST, INGEST_KEY

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
)
PHASES = (PhaseName.EXAMPLES, PhaseName.COVERAGE, PhaseName.FUZZING, PhaseName.STATEFUL_TESTING)

# One pass of each phase, bounded by example counts rather than by time: with a `max-time` the engine keeps cycling
# fuzzing and stateful until the time is spent. ~1,300 requests, 25-55 s on a 2-core machine under a load of 7-9 (other
# test runs). A fixed seed makes a failure reproducible.
CONFIG: dict[str, Any] = {
    "seed": 20261129,
    # Nothing kept between runs (no .schemathesis/ cache, no example database): each run is the seeded one.
    "cache": {"enabled": False},
    "generation": {"max-examples": 50, "database": "none"},
    "phases": {
        "examples": {"enabled": True},
        "coverage": {"enabled": True},
        "fuzzing": {"enabled": True},
        "stateful": {"enabled": True, "max-steps": 10, "generation": {"max-examples": 30}},
    },
    "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
    "auth": {"openapi": {"AdminKey": {"api_key": ADMIN_KEY}, "IngestKey": {"api_key": INGEST_KEY}}},
    "request-timeout": 30,
}


@pytest.fixture
def schema(runtime_factory: Callable[..., Callable[[], Runtime]]) -> Iterator[Any]:
    from api.main import create_app

    app = create_app(
        runtime_factory=runtime_factory(),
        api_settings=ApiSettings(key=ADMIN_KEY, ingest_key=INGEST_KEY),  # type: ignore[arg-type]
    )
    try:
        # Loading the document starts the app's lifespan (schemathesis keeps it until shutdown_lifespans).
        yield schemathesis.openapi.from_asgi("/openapi.json", app, config=schemathesis.Config.from_dict(CONFIG))
    finally:
        shutdown_lifespans()


def _outcomes(event: events.ScenarioFinished) -> tuple[Counter[str], list[str]]:
    """How often each check ran in a scenario, and one line per failed check (with the request that failed it)."""
    ran: Counter[str] = Counter()
    failed = []
    for case_id, checks in event.recorder.checks.items():
        for check in checks:
            ran[check.name] += 1
            if check.status is Status.FAILURE and check.failure_info is not None:
                failure = check.failure_info.failure
                case = event.recorder.cases[case_id].value
                failed.append(
                    f"[{event.phase.value}] {event.label}: {check.name}: {failure.title}: {failure.message}\n"
                    f"    request: {case.method} {case.formatted_path} headers={case.headers} body={case.body!r:.600}"
                )
    return ran, failed


def test_the_api_keeps_its_openapi_contract(schema: Any) -> None:
    failures: list[str] = []
    errors: list[str] = []
    phases: dict[PhaseName, Status] = {}
    requests: Counter[PhaseName] = Counter()
    checked: Counter[str] = Counter()
    finished: events.EngineFinished | None = None
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            requests[event.phase] += len(event.recorder.cases)
            ran, failed = _outcomes(event)
            checked += ran
            failures += failed
        elif isinstance(event, events.PhaseFinished):
            phases[event.phase.name] = event.status
        elif isinstance(event, events.NonFatalError | events.FatalError):
            errors.append(repr(event))
        elif isinstance(event, events.EngineFinished):
            finished = event
    print("requests by phase", {p.value: n for p, n in requests.items()}, "checks run", dict(checked))
    assert not errors, "\n".join(errors)
    distinct = list(dict.fromkeys(failures))  # a failure is replayed while it is shrunk: say each once
    assert not distinct, f"{len(distinct)} distinct failed checks:\n" + "\n".join(distinct[:30])
    assert finished is not None and finished.stop_reason is StopReason.COMPLETED, finished
    for phase in PHASES:
        assert phases.get(phase) is Status.SUCCESS, (phase, phases)
        assert requests[phase] > 0, (phase, requests)
    # Every named check really ran, and often (the coverage phase alone sends ~1,800 requests).
    assert all(checked[name] >= 100 for name in CHECKS), checked


# ----------------------------------------------------------------------------------- what the fuzzer first found


NOT_UTF8 = b'{"transaction_id": "tx_\xff\xfe"}'


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/v1/bnpl/risk-assessment", {}),  # the raw Starlette fast path
        ("/v1/bnpl/risk-assessment:batch", {}),
        ("/v1/outcomes", INGEST),
        ("/v1/admin/experiments/canary-challenger/transition", ADMIN),
    ],
)
def test_a_body_that_is_not_utf8_is_a_422_on_every_route(
    client: TestClient, path: str, headers: dict[str, str]
) -> None:
    for body in (NOT_UTF8, b"\xff\xfe\x00"):
        answer = client.post(path, content=body, headers={"content-type": "application/json", **headers})
        assert answer.status_code == 422, (path, answer.text)
        [error] = answer.json()["detail"]
        assert error["type"] == "json_invalid"
        assert error["loc"][0] == "body"
        assert error["input"] == {}  # the raw bytes are not echoed


def test_every_status_a_route_returns_is_documented_with_its_body(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]

    def documented(path: str, method: str = "post") -> dict[str, str | None]:
        responses = paths[path][method]["responses"]
        return {
            status: (response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "")
                     .rsplit("/", 1)[-1] or None)
            for status, response in responses.items()
        }  # fmt: skip

    error, invalid = "ErrorResponse", "ValidationErrorResponse"
    # 503: the journal cannot take the decision or outcome (it is over its limit, or the disk refused the write).
    assert documented("/v1/bnpl/risk-assessment") == {"200": "AssessmentResponse", "422": invalid, "503": error}
    assert documented("/v1/bnpl/risk-assessment:batch") == {
        "200": "BatchAssessmentResponse",
        "413": error,
        "422": invalid,
        "503": error,
    }
    assert documented("/v1/outcomes") == {"202": "OutcomeAccepted", "401": error, "422": invalid, "503": error}
    for change in ("transition", "share"):
        assert documented(f"/v1/admin/experiments/{{experiment_id}}/{change}") == {
            "200": None,
            "401": error,
            "404": error,
            "409": error,
            "422": invalid,
            "503": error,
        }
    assert documented("/v1/admin/models/reload") == {"200": None, "401": error}
    assert set(documented("/health/ready", "get")) == {"200", "503"}
    assert set(paths["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    # Each key scope is declared, and each protected route names its own.
    assert paths["/v1/outcomes"]["post"]["security"] == [{"IngestKey": []}]
    assert paths["/v1/admin/models/reload"]["post"]["security"] == [{"AdminKey": []}]
