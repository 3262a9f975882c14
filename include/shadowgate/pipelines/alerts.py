"""Alerts: logged, posted as JSON to a webhook when one is configured (Slack-, Teams- or PagerDuty-style receivers
take a JSON POST), and — for conditions a pipeline checks run after run — recorded in the warehouse table ``alerts``
so that each condition is **sent once** while it holds.

Sending an alert never raises: a broken webhook must not turn a failed upload into a different failure. The webhook
address is a secret (a Slack or Teams URL carries its token in the path): it is never written to a log, not even in
the error of a failed post.

A recurring condition (a model's AUC below its baseline, a sample-ratio mismatch …) is a :class:`Check`: evaluated on
a run, it holds (with the :class:`Alert` to send) or it does not. :func:`record_alerts` keeps one row per condition,
keyed by :func:`alert_key` ``(kind, subject, condition)``: the first run on which it holds sends the alert and opens
an episode; later runs while it holds only count it (``times_seen``, ``last_seen_at``); the first run on which it is
cleared resolves it (``resolved_at``; a check with a threshold clears below a lower bar than the one it alerts at,
so a figure hovering at the bound does not flap); holding again after that opens a new episode and sends again. Runs are
ordered by their as-of instant, so a re-run (or a backfill of an older run) changes nothing and sends nothing; a send
that failed is retried by the next run on which the condition still holds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pyarrow as pa

from shadowgate.storage.warehouse import ALERTS, Warehouse, arrow_schema

logger = logging.getLogger(__name__)

STATE_QUERY = "queries/alert_state"


@dataclass(frozen=True)
class Alert:
    """What is sent.

    Attributes:
        title: one line.
        text: what happened and what to do.
        severity: ``error``, ``warning`` or ``info``.
        source: the pipeline that raised it.
        details: figures behind it (JSON-able).
        at: when it was raised (ISO 8601).
        kind: the condition's family (``auc_drop``, ``srm`` …), for a recurring condition (see :class:`Check`).
        subject: what it is about (a model ``alias@version``, an experiment id).
        condition: which condition of the subject (e.g. ``final label: AUC below its baseline``).
    """

    title: str
    text: str
    severity: str = "error"
    source: str = "shadowgate"
    details: dict[str, object] = field(default_factory=dict)
    at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())
    kind: str = ""
    subject: str = ""
    condition: str = ""


def alert_key(kind: str, subject: str, condition: str) -> str:
    """The stable key of one condition of one subject (the ``alerts`` row it updates, run after run)."""
    return hashlib.sha256("\x1f".join((kind, subject, condition)).encode()).hexdigest()[:32]


def _redact(message: str, url: str) -> str:
    """``message`` without the webhook address or any part of it that identifies the hook (its path carries the
    token; urllib's errors quote the whole URL)."""
    parts = urllib.parse.urlsplit(url)
    secrets = {url, url.rstrip("/"), parts.path, f"{parts.path}?{parts.query}", parts.query, parts.netloc}
    for secret in sorted((s for s in secrets if len(s) > 1), key=len, reverse=True):
        message = message.replace(secret, "<webhook>")
    return message


def send_alert(alert: Alert, *, webhook_url: str | None, timeout_s: float = 5.0) -> bool:
    """Log ``alert`` and post it to ``webhook_url`` (if any). True when it was delivered (or only logged).

    The address never reaches a log: a failed post is logged with the error, every part of the address in it
    replaced by ``<webhook>``.
    """
    level = logging.ERROR if alert.severity == "error" else logging.WARNING
    logger.log(level, "ALERT [%s] %s: %s %s", alert.severity, alert.title, alert.text, alert.details or "")
    if not webhook_url:
        return True
    try:
        request = urllib.request.Request(
            webhook_url,
            data=json.dumps({**asdict(alert), "text": f"{alert.title}: {alert.text}"}, default=str).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            delivered = 200 <= response.status < 300
            if not delivered:
                logger.error("alert webhook answered HTTP %s: %r not delivered", response.status, alert.title)
            return delivered
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = _redact(f"{type(error).__name__}: {error}", webhook_url)
        logger.error("alert webhook (SHADOWGATE_ALERT_WEBHOOK_URL) failed: %s; %r not delivered", reason, alert.title)
        return False


def task_failure_alert(
    *, dag_id: str, task_id: str, run_id: str, try_number: int | None, error: BaseException | None
) -> Alert:
    """The alert for an Airflow task that failed for good (its retries spent)."""
    return Alert(
        title=f"{dag_id}.{task_id} failed",
        text=f"run {run_id}, try {try_number}: {type(error).__name__ if error else 'error'}: {error}",
        details={"dag_id": dag_id, "task_id": task_id, "run_id": run_id, "try_number": try_number},
        kind="task_failure",
        subject=f"{dag_id}.{task_id}",
        condition=run_id,
    )


# ------------------------------------------------------------------------------------------------ recorded conditions


@dataclass(frozen=True)
class Check:
    """One condition evaluated on one run: it holds when ``alert`` is given (what to send), else it does not.

    ``cleared`` (when it does not hold): whether it is gone for good enough to resolve an open episode. A check with
    a threshold says False while its figure still sits between the alerting bound and a lower one (hysteresis): a
    figure hovering around the bound would otherwise resolve and re-send week after week.
    """

    kind: str
    subject: str
    condition: str
    alert: Alert | None = None
    cleared: bool = True

    @property
    def key(self) -> str:
        return alert_key(self.kind, self.subject, self.condition)


@dataclass(frozen=True)
class AlertState:
    """One row of the ``alerts`` table: a condition and its current episode.

    Attributes:
        alert_key: :func:`alert_key` of (kind, subject, condition).
        first_raised_at: as-of instant of the run that opened the current episode (the condition began to hold).
        last_seen_at: the latest run on which it held.
        resolved_at: the first run after ``last_seen_at`` on which it no longer held (None: it still holds).
        times_seen: runs on which it held in the current episode.
        times_raised: episodes so far (each one sent once).
        notified_at: when the current episode's alert was delivered (None: not yet: the next run retries).
        details: the figures of the latest run on which it held.
    """

    alert_key: str
    kind: str
    subject: str
    condition: str
    severity: str
    source: str
    title: str
    text: str
    first_raised_at: dt.datetime
    last_seen_at: dt.datetime
    resolved_at: dt.datetime | None
    times_seen: int
    times_raised: int
    notified_at: dt.datetime | None
    details: dict[str, Any]

    @property
    def active(self) -> bool:
        return self.resolved_at is None

    def row(self) -> dict[str, Any]:
        """The staged row (details as JSON text: the MERGE parses it)."""
        return {**asdict(self), "details": json.dumps(self.details, default=str, sort_keys=True)}


def advance(state: AlertState | None, check: Check, *, at: dt.datetime) -> tuple[AlertState | None, bool]:
    """The condition's state after ``check`` on the run as of ``at``, and whether its alert is to be sent now.

    A run no later than the state's last change (a re-run, a backfill of an older run) changes nothing; it only
    retries a send that failed.
    """
    alert = check.alert
    if alert is None:
        if state is None or not state.active or at <= state.last_seen_at or not check.cleared:
            return state, False
        return replace(state, resolved_at=at), False
    figures = {
        "severity": alert.severity,
        "source": alert.source,
        "title": alert.title,
        "text": alert.text,
        "details": dict(alert.details),
    }
    if state is None or (not state.active and state.resolved_at is not None and at > state.resolved_at):
        opened = AlertState(
            alert_key=check.key,
            kind=check.kind,
            subject=check.subject,
            condition=check.condition,
            first_raised_at=at,
            last_seen_at=at,
            resolved_at=None,
            times_seen=1,
            times_raised=(state.times_raised if state else 0) + 1,
            notified_at=None,
            **figures,  # type: ignore[arg-type]
        )
        return opened, True
    if not state.active:
        return state, False  # an older run re-run after the condition resolved: history, not news
    if at > state.last_seen_at:
        state = replace(state, last_seen_at=at, times_seen=state.times_seen + 1, **figures)  # type: ignore[arg-type]
    return state, state.notified_at is None


@dataclass(frozen=True)
class AlertsRecorded:
    """What :func:`record_alerts` did (alert titles)."""

    sent: tuple[str, ...]
    """Conditions that began to hold (or whose earlier send failed): sent now."""
    held: tuple[str, ...]
    """Conditions that still hold and were sent before: counted, not sent again."""
    resolved: tuple[str, ...]
    """Conditions that held before and no longer do."""
    failed: tuple[str, ...] = ()
    """Sends that failed: retried by the next run on which the condition holds."""


def _states(warehouse: Warehouse, keys: Sequence[str]) -> dict[str, AlertState]:
    if not keys:
        return {}
    out = {}
    for r in warehouse.run(STATE_QUERY, {"keys": list(keys)}).to_pylist():
        details = r.pop("details")
        out[r["alert_key"]] = AlertState(**r, details=json.loads(details) if details else {})
    return out


def record_alerts(
    warehouse: Warehouse, checks: Iterable[Check], *, at: dt.datetime, send: Callable[[Alert], object]
) -> AlertsRecorded:
    """Update the ``alerts`` rows of ``checks`` as of ``at`` and send the alerts of conditions that began to hold.

    Args:
        warehouse: holds the ``alerts`` table.
        checks: the conditions this run evaluated (one per key; a later duplicate replaces an earlier one).
        at: the run's as-of instant (its data interval end: a backfill of a past run passes that run's instant).
        send: delivers one alert (:func:`send_alert` bound to the webhook); a False return is a failed delivery.

    A send happens before its row is written: a run that fails in between sends again on its retry (at least once).
    """
    by_key = {c.key: c for c in checks}
    states = _states(warehouse, list(by_key))
    changed: list[AlertState] = []
    sent, held, resolved, failed = [], [], [], []
    for key, check in by_key.items():
        before = states.get(key)
        after, to_send = advance(before, check, at=at)
        if after is None:
            continue
        if to_send and check.alert is not None:
            if send(check.alert) is False:
                failed.append(check.alert.title)
            else:
                sent.append(check.alert.title)
                after = replace(after, notified_at=at)
        elif check.alert is not None:
            held.append(check.alert.title)
        elif before is not None and before.active and not after.active:
            resolved.append(after.title)
            logger.info(
                "alert resolved: %s (held %d runs since %s)", after.title, after.times_seen, after.first_raised_at
            )
        if after != before:
            changed.append(after)
    if changed:
        _write(warehouse, changed, at=at)
    return AlertsRecorded(sent=tuple(sent), held=tuple(held), resolved=tuple(resolved), failed=tuple(failed))


def _write(warehouse: Warehouse, states: Sequence[AlertState], *, at: dt.datetime) -> None:
    batch = pa.Table.from_pylist([s.row() for s in states], schema=arrow_schema(ALERTS))
    staging = warehouse.stage(ALERTS, batch, batch_id=f"alerts_{at:%Y%m%dT%H%M%S}")
    warehouse.merge(ALERTS, staging=staging)
