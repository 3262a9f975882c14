"""Default arguments and the failure alert of every shadowgate DAG (one copy, used by all)."""

from __future__ import annotations

import datetime as dt
from typing import Any


def alert_on_failure(context: Any) -> None:
    """Task failure callback: the task failed for good (its retries spent) → an alert through the shared path
    (``shadowgate.pipelines.alerts``: logged, and posted to ``SHADOWGATE_ALERT_WEBHOOK_URL`` when set)."""
    from shadowgate.config import AlertSettings
    from shadowgate.pipelines.alerts import send_alert, task_failure_alert

    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    alert = task_failure_alert(
        dag_id=getattr(ti, "dag_id", None) or getattr(dag, "dag_id", "?"),
        task_id=getattr(ti, "task_id", "?"),
        run_id=getattr(ti, "run_id", "?"),
        try_number=getattr(ti, "try_number", None),
        error=context.get("exception"),
    )
    url = AlertSettings().webhook_url
    send_alert(alert, webhook_url=url.get_secret_value() if url else None)


DEFAULT_ARGS: dict[str, Any] = {
    "owner": "shadowgate",
    "retries": 3,
    "retry_delay": dt.timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=10),
    "on_failure_callback": alert_on_failure,
}
"""Every task: owned by shadowgate, 3 retries with exponential backoff (30 s → 10 min; a DuckDB file locked by another
writer or a warehouse hiccup passes), and an alert when the last try fails."""
