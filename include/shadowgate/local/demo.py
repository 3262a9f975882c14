"""``make demo``: the whole loop on the running local stack, as a user drives it.

1. **Replay** the weeks after the seeded history through the API (every purchase a decision, then the outcomes of
   the approved ones, 500 a request): the champion decides, the challenger scores every request in shadow.
2. **Upload** the decisions and outcomes to the warehouse (`upload_predictions`, triggered).
3. **Label** them as the payment cycle runs: `join_ground_truth` once a week (Monday) with ``relabel_days`` 6 — the
   labels of seven daily runs in one run, each as known that Monday.
4. **Evaluate** every cohort week whose final label has matured by today (`weekly_performance`, a backfill through
   the REST API, as the UI's Backfill button makes it). Each run updates the asset `model_metrics`, so
   `promote_challenger` runs after it on its own; a last run is triggered at the end.
5. **Wait** for the API to serve the new champion, and print where to look.

The weeks are chosen so that their final labels (90 days) have matured by today: the last cohort is the week ending
98 days before the latest Monday. The replayed purchases are denser than the seeded history (3,000 a day) so that a
challenger better by the shipped pair's margin can be told apart in those weeks; whether it is, the plan decides: the
demo reports what the gate concluded, promotion or not.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

DEMO_WEEKS = 9
"""Cohort weeks replayed and evaluated (their final labels matured by today)."""
PURCHASES_PER_DAY = 3_000
SEED = 2026


@dataclass(frozen=True)
class DemoWindow:
    start: dt.date
    """Monday of the first replayed week."""
    weeks: int
    today: dt.date
    """The latest Monday: the last weekly run's as-of day."""

    @property
    def end(self) -> dt.date:
        return self.start + dt.timedelta(weeks=self.weeks)

    @property
    def mondays(self) -> list[dt.date]:
        """Every Monday whose join run labels part of the window: from the week after its start to today."""
        out, day = [], self.start + dt.timedelta(weeks=1)
        while day <= self.today:
            out.append(day)
            day += dt.timedelta(weeks=1)
        return out


def demo_window(*, history_end: dt.date, today: dt.date, weeks: int = DEMO_WEEKS) -> DemoWindow:
    """The ``weeks`` cohort weeks ending at the last one whose final label matured by the latest Monday, and never
    before the seeded history's end (the models' training data).

    Raises:
        ValueError: fewer than 4 such weeks after the history (the demo would show nothing worth seeing).
    """
    monday = today - dt.timedelta(days=today.weekday())
    last_cohort = monday - dt.timedelta(days=98)
    first = max(
        last_cohort - dt.timedelta(weeks=weeks - 1), history_end + dt.timedelta(days=-history_end.weekday() % 7)
    )
    count = (last_cohort - first).days // 7 + 1
    if count < 4:
        raise ValueError(
            f"only {max(count, 0)} cohort week(s) between the history's end ({history_end}) and the last week whose "
            f"final label has matured ({last_cohort}): the demo needs 4"
        )
    return DemoWindow(start=first, weeks=count, today=monday)


@dataclass
class DemoReport:
    window: DemoWindow
    steps: list[tuple[str, float, str]] = field(default_factory=list)
    """(step, seconds, what it did)."""
    champion_before: str | None = None
    champion_after: str | None = None
    previous: str | None = None
    decision: dict[str, Any] | None = None
    promote_run: str | None = None

    def step(self, name: str, started: float, what: str) -> None:
        self.steps.append((name, time.monotonic() - started, what))


def served_champion(api_url: str) -> str | None:
    """The version the API serves as ``@champion`` (``GET /v1/models``)."""
    answer = httpx.get(f"{api_url}/v1/models", timeout=10).json()
    champion = (answer.get("aliases") or {}).get("champion")
    return None if champion is None else str(champion.get("version"))


def wait_for_champion(api_url: str, version: str, *, timeout_s: float = 120.0, poll_s: float = 2.0) -> bool:
    """Poll until the API serves ``version`` as champion (it follows the registry within its poll interval)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if served_champion(api_url) == version:
            return True
        time.sleep(poll_s)
    return False


def run_demo(
    *,
    airflow: Any,
    api_url: str,
    registry: Any,
    window: DemoWindow,
    replay: Callable[[DemoWindow], str],
    say: Callable[[str], None],
) -> DemoReport:
    """Steps 2-5 of the module around ``replay`` (step 1, which the caller runs with its progress bars)."""
    report = DemoReport(window=window)
    before = registry.version("champion")
    report.champion_before = None if before is None else before.version
    challenger = registry.version("challenger")
    say(
        f"registry: @champion = version {report.champion_before}, @challenger = "
        f"{challenger.version if challenger else 'none'}; API serves champion version {served_champion(api_url)}"
    )

    started = time.monotonic()
    say(f"1/5 replay: {window.weeks} weeks from {window.start} through the API ({api_url})")
    report.step("replay", started, replay(window))

    started = time.monotonic()
    say("2/5 upload: upload_predictions (streams → warehouse)")
    airflow.wait_for_dag("upload_predictions")
    run_id = airflow.trigger("upload_predictions")
    states = airflow.wait_for_runs("upload_predictions", run_ids={run_id}, timeout_s=1800).states
    report.step("upload", started, f"upload_predictions {run_id}: {states}")

    started = time.monotonic()
    mondays = window.mondays
    say(f"3/5 labels: join_ground_truth on {len(mondays)} Mondays ({mondays[0]} to {mondays[-1]}), relabel_days 6")
    airflow.wait_for_dag("join_ground_truth")
    runs = set()
    for monday in mondays:
        at = dt.datetime.combine(monday, dt.time(), dt.UTC)
        runs.add(airflow.trigger("join_ground_truth", logical_date=at, conf={"relabel_days": 6}))
    joined = airflow.wait_for_runs("join_ground_truth", run_ids=runs, timeout_s=3600)
    report.step("labels", started, joined.render())

    started = time.monotonic()
    first_end = window.start + dt.timedelta(days=98)  # the run whose final cohort is the first replayed week
    say(f"4/5 evaluation: weekly_performance backfill, runs ending {first_end} to {window.today}")
    airflow.wait_for_dag("weekly_performance")
    interval_start = dt.datetime.combine(first_end - dt.timedelta(weeks=1), dt.time(), dt.UTC)
    interval_last = dt.datetime.combine(window.today - dt.timedelta(weeks=1), dt.time(), dt.UTC)
    backfill = airflow.create_backfill(
        "weekly_performance", from_date=interval_start, to_date=interval_last, max_active_runs=1
    )
    weekly = airflow.wait_for_runs(
        "weekly_performance", run_type="backfill", between=(interval_start, interval_last), backfill_id=backfill,
        timeout_s=3600,
    )  # fmt: skip
    report.step("evaluation", started, weekly.render())

    started = time.monotonic()
    say("5/5 promotion: promote_challenger (after the runs the asset triggered)")
    airflow.wait_for_dag("promote_challenger")
    _wait_for_asset_runs(airflow, "promote_challenger")
    final = airflow.trigger("promote_challenger")
    airflow.wait_for_runs("promote_challenger", run_ids={final}, timeout_s=1800)
    report.promote_run = _last_deciding_run(airflow) or final
    summary = airflow.xcom("promote_challenger", report.promote_run, "decide_and_move") or {}
    decisions = summary.get("decisions") or []
    report.decision = decisions[0] if decisions else None
    after = registry.version("champion")
    report.champion_after = None if after is None else after.version
    previous = registry.version("previous")
    report.previous = None if previous is None else previous.version
    served = None
    if report.champion_after != report.champion_before and report.champion_after is not None:
        served = wait_for_champion(api_url, report.champion_after)
    report.step(
        "promotion", started, f"champion {report.champion_before} → {report.champion_after}; API serving it: {served}"
    )
    return report


def _wait_for_asset_runs(airflow: Any, dag_id: str, *, timeout_s: float = 900.0) -> None:
    """Until no run of ``dag_id`` is queued or running (the asset-triggered ones the backfill caused)."""
    deadline = time.monotonic() + timeout_s
    time.sleep(5.0)  # the scheduler creates asset-triggered runs on its next loop
    while time.monotonic() < deadline:
        if all(r["state"] in ("success", "failed") for r in airflow.runs(dag_id)):
            return
        time.sleep(3.0)


def _last_deciding_run(airflow: Any) -> str | None:
    """The latest successful promote_challenger run that decided on a challenger (a promotion, or the last wait)."""
    chosen = None
    for run in airflow.runs("promote_challenger"):
        if run["state"] != "success":
            continue
        summary = airflow.xcom("promote_challenger", run["dag_run_id"], "decide_and_move") or {}
        decisions = summary.get("decisions") or []
        if any(d.get("action") == "promote" for d in decisions):
            return str(run["dag_run_id"])
        if decisions:
            chosen = str(run["dag_run_id"])
    return chosen
