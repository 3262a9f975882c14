"""Alerts: logged at ERROR, and posted as JSON to a webhook when one is configured (Slack-, Teams- or
PagerDuty-style receivers take a JSON POST). Sending an alert never raises: a broken webhook must not turn a failed
upload into a different failure."""

from __future__ import annotations

import datetime as dt
import json
import logging
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alert:
    """What is sent."""

    title: str
    text: str
    severity: str = "error"
    source: str = "shadowgate"
    details: dict[str, object] = field(default_factory=dict)
    at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())


def send_alert(alert: Alert, *, webhook_url: str | None, timeout_s: float = 5.0) -> bool:
    """Log ``alert`` and post it to ``webhook_url`` (if any). True when it was delivered (or only logged)."""
    logger.error("ALERT [%s] %s: %s %s", alert.severity, alert.title, alert.text, alert.details or "")
    if not webhook_url:
        return True
    request = urllib.request.Request(
        webhook_url,
        data=json.dumps({**asdict(alert), "text": f"{alert.title}: {alert.text}"}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError) as error:
        logger.error("alert webhook %s failed: %s", webhook_url, error)
        return False


def task_failure_alert(
    *, dag_id: str, task_id: str, run_id: str, try_number: int | None, error: BaseException | None
) -> Alert:
    """The alert for an Airflow task that failed for good (its retries spent)."""
    return Alert(
        title=f"{dag_id}.{task_id} failed",
        text=f"run {run_id}, try {try_number}: {type(error).__name__ if error else 'error'}: {error}",
        details={"dag_id": dag_id, "task_id": task_id, "run_id": run_id, "try_number": try_number},
    )
