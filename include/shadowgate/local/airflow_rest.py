"""Driving the local Airflow through its REST API as a user would: log in, trigger a run, create a backfill, wait.

The walk-through, the stack's tests and ``make demo`` replay history through Airflow this way (the UI calls the same
endpoints). Nothing here imports Airflow; it speaks HTTP to the api-server ``make up`` started.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

TERMINAL_RUN_STATES = frozenset({"success", "failed"})


class AirflowRestError(RuntimeError):
    """The api-server refused a call or a wait timed out."""


@dataclass(frozen=True)
class RunReport:
    """What a set of Dag runs ended as: states, and the task tries beyond the first (a retry means a failure)."""

    dag_id: str
    runs: int
    states: dict[str, int]
    retried: list[str] = field(default_factory=list)
    """``run_id/task_id (try n)`` of every task instance that failed a try before its last one (a try that a
    backfill's reprocessing added after a success is not a retry)."""
    seconds: float = 0.0

    @property
    def all_succeeded_first_try(self) -> bool:
        return self.runs > 0 and self.states == {"success": self.runs} and not self.retried

    def render(self) -> str:
        states = ", ".join(f"{n} {s}" for s, n in sorted(self.states.items()))
        retries = f"; retried: {', '.join(self.retried)}" if self.retried else "; every task at its first try"
        return f"{self.dag_id}: {self.runs} runs ({states}) in {self.seconds:.0f} s{retries}"


def _logical_between(run: Mapping[str, Any], between: tuple[dt.datetime, dt.datetime]) -> bool:
    """The run's logical date lies in the closed range (a run without one, e.g. asset-triggered, does not)."""
    logical = run.get("logical_date")
    return logical is not None and between[0] <= dt.datetime.fromisoformat(logical) <= between[1]


def _iso(value: dt.datetime) -> str:
    if value.tzinfo is None:
        raise ValueError(f"{value} is naive: give Airflow an aware instant")
    return value.isoformat()


class AirflowRest:
    """A logged-in client of the api-server at ``base_url``."""

    def __init__(self, base_url: str, *, username: str, password: str, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s)
        answer = self._http.post("/auth/token", json={"username": username, "password": password})
        if answer.status_code not in (200, 201):
            raise AirflowRestError(f"login to {self.base_url} refused ({answer.status_code}): {answer.text[:300]}")
        self._http.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AirflowRest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = self._http.request(method, path, **kwargs)
        if answer.status_code >= 400:
            raise AirflowRestError(f"{method} {path} → {answer.status_code}: {answer.text[:500]}")
        return answer.json() if answer.content else None

    # ---------------------------------------------------------------------------------------------------- calls

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/api/v2/monitor/health")
        return result

    def scheduler_healthy(self) -> bool:
        return self.health().get("scheduler", {}).get("status") == "healthy"

    def dag_ready(self, dag_id: str) -> bool:
        """The Dag is parsed and known to the api-server (a fresh stack parses its files within seconds)."""
        answer = self._http.get(f"/api/v2/dags/{dag_id}")
        return answer.status_code == 200

    def wait_for_dag(self, dag_id: str, *, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.dag_ready(dag_id):
            if time.monotonic() > deadline:
                raise AirflowRestError(
                    f"Airflow does not know a Dag {dag_id!r} after {timeout_s:.0f} s (a typo? the Dag ids are in the"
                    " UI's Dags page; a new Dag file shows up within 30 s)"
                )
            time.sleep(1.0)

    def trigger(
        self, dag_id: str, *, logical_date: dt.datetime | None = None, conf: Mapping[str, Any] | None = None
    ) -> str:
        """Start one run now; returns its run id."""
        body = {"logical_date": _iso(logical_date) if logical_date else None, "conf": dict(conf or {})}
        return str(self._call("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)["dag_run_id"])

    def set_note(self, dag_id: str, run_id: str, note: str) -> None:
        """The run's note (shown on the run in the UI; at most 1,000 characters)."""
        self._call(
            "PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", json={"note": note}, params={"update_mask": "note"}
        )

    def create_backfill(
        self,
        dag_id: str,
        *,
        from_date: dt.datetime,
        to_date: dt.datetime,
        max_active_runs: int = 4,
        reprocess_behavior: str = "completed",
        conf: Mapping[str, Any] | None = None,
    ) -> int:
        """A backfill of the Dag's scheduled runs between the dates (both included); returns its id."""
        body = {
            "dag_id": dag_id,
            "from_date": _iso(from_date),
            "to_date": _iso(to_date),
            "run_backwards": False,
            "dag_run_conf": dict(conf or {}),
            "reprocess_behavior": reprocess_behavior,
            "max_active_runs": max_active_runs,
        }
        return int(self._call("POST", "/api/v2/backfills", json=body)["id"])

    def backfill(self, backfill_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/api/v2/backfills/{backfill_id}")
        return result

    def runs(self, dag_id: str, *, run_type: str | None = None) -> list[dict[str, Any]]:
        """Every run of the Dag (of one type: ``backfill``, ``manual``, ``scheduled``, ``asset_triggered``)."""
        out: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 100, "order_by": "logical_date"}
        if run_type is not None:
            params["run_type"] = run_type
        while True:
            page = self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={**params, "offset": len(out)})
            out.extend(page["dag_runs"])
            total = page.get("total_entries")
            if not page["dag_runs"] or (total is not None and len(out) >= total) or len(page["dag_runs"]) < 100:
                return out

    def tries(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """Every try of a task instance, with the state each ended in."""
        page = self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries")
        result: list[dict[str, Any]] = page["task_instances"]
        return result

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """A task's XCom value (its return value by default), deserialized."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        return self._call("GET", path, params={"deserialize": "true", "stringify": "false"})["value"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        page = self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
        result: list[dict[str, Any]] = page["task_instances"]
        return result

    # ---------------------------------------------------------------------------------------------------- waits

    def wait_for_runs(
        self,
        dag_id: str,
        *,
        run_ids: set[str] | None = None,
        run_type: str | None = None,
        between: tuple[dt.datetime, dt.datetime] | None = None,
        backfill_id: int | None = None,
        timeout_s: float = 3600.0,
        poll_s: float = 5.0,
    ) -> RunReport:
        """Wait until the runs (given ids, or all of a type whose logical date is ``between`` two instants; a
        backfill: until it completed) are finished, then report their states and any task that needed more than one
        try."""
        started = time.monotonic()
        while True:
            chosen = [
                r
                for r in self.runs(dag_id, run_type=run_type)
                if (run_ids is None or r["dag_run_id"] in run_ids) and (between is None or _logical_between(r, between))
            ]
            done = all(r["state"] in TERMINAL_RUN_STATES for r in chosen)
            if backfill_id is not None:
                done = done and self.backfill(backfill_id).get("completed_at") is not None
            if chosen and done:
                break
            if time.monotonic() - started > timeout_s:
                states = Counter(r["state"] for r in chosen)
                raise AirflowRestError(f"{dag_id}: runs not finished after {timeout_s:.0f} s: {dict(states)}")
            time.sleep(poll_s)
        retried = []
        for r in chosen:
            for ti in self.task_instances(dag_id, r["dag_run_id"]):
                if int(ti.get("try_number") or 0) <= 1:
                    continue
                earlier = [
                    t for t in self.tries(dag_id, r["dag_run_id"], ti["task_id"]) if t["try_number"] < ti["try_number"]
                ]
                if any(t.get("state") != "success" for t in earlier):
                    retried.append(f"{r['dag_run_id']}/{ti['task_id']} (try {ti['try_number']})")
        return RunReport(
            dag_id=dag_id,
            runs=len(chosen),
            states=dict(Counter(str(r["state"]) for r in chosen)),
            retried=retried,
            seconds=time.monotonic() - started,
        )
