"""Alerts where people look in Airflow: the note of the run that raised them.

An alert is logged, recorded in the warehouse (sent once per condition) and posted to the webhook; in Airflow a run
that raised one still ends *success* (its figures are right: a model drifting is news, not a failure of the run),
so the alert is put on the run itself as its **note**, shown on the run in the Grid and the run's page — the run
stays green, the note says what to look at and what to do next. A condition that holds week after week is raised
once (the alerts table remembers), so only the run that raised it carries the note.

Airflow 3's task SDK cannot write a note; the public REST API can, with an account that may edit runs
(``SHADOWGATE_AIRFLOW_API_*``; ``make up`` configures its own Airflow). Without one the note is skipped (logged).
Writing the note never fails the task.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from shadowgate.config import AirflowSettings

logger = logging.getLogger(__name__)

NOTE_LIMIT = 1000
"""Airflow's maximum note length."""


def render_note(alerts: Sequence[Mapping[str, Any]], *, limit: int = NOTE_LIMIT) -> str:
    """The note (Markdown) for the alerts a run raised. Airflow shows a note's first line on the run's page and the
    rest on a click, so the first line is the most severe alert's title; then every alert, errors first, with its
    cohort, what happened and the next step. Cut to ``limit`` characters."""
    order = {"error": 0, "warning": 1, "info": 2}
    ranked = sorted(alerts, key=lambda a: order.get(str(a.get("severity")), 3))
    first = ranked[0]
    more = f" (+{len(ranked) - 1} more alert{'s' if len(ranked) > 2 else ''})" if len(ranked) > 1 else ""
    lines = [f"**{str(first.get('severity', '')).upper()}** {first['title']}{more}", ""]
    for a in ranked:
        where = f" [{a['cohort']} {a['label']}]" if a.get("cohort") else ""
        lines.append(f"- **{str(a.get('severity', '')).upper()}**{where} {a['title']}: {a['text']}")
    lines += ["", "Raised by this run; each condition is sent once while it holds."]
    note = "\n".join(lines)
    if len(note) > limit:
        note = note[: limit - 40].rstrip() + "\n… (the task log has every alert)"
    return note


def _password(settings: AirflowSettings) -> str | None:
    if settings.api_password_file is None:
        return None
    try:
        text = settings.api_password_file.read_text().strip()
    except OSError:
        return None
    try:
        found = json.loads(text)
    except ValueError:
        return text or None
    if isinstance(found, dict):
        value = found.get(settings.api_user)
        return str(value) if value else None
    return text or None


def note_alerts(
    summary: Mapping[str, Any], *, dag_id: str, run_id: str, settings: AirflowSettings | None = None
) -> str | None:
    """Put the alerts the run raised (``summary["alerts_raised"]``) on the Airflow run as its note.

    Returns the note written, or None: no alert raised, no API configured, or the API refused (logged, never raised).
    """
    raised = list(summary.get("alerts_raised") or [])
    if not raised:
        logger.info("no alert raised by this run: no note")
        return None
    note = render_note(raised)
    logger.warning("alerts raised by this run:\n%s", note)
    return write_note(note, dag_id=dag_id, run_id=run_id, settings=settings)


def render_promotion_note(summary: Mapping[str, Any], *, limit: int = NOTE_LIMIT) -> str:
    """The note of a ``promote_challenger`` run: its sentence first (the line the run's page shows), then each
    decision with its gates."""
    lines = [str(summary.get("sentence", ""))]
    for d in summary.get("decisions") or []:
        lines += ["", f"**{str(d.get('action', '')).upper()}** {d.get('challenger')} vs {d.get('champion')}"]
        for g in d.get("gates") or []:
            lines.append(f"- {g['gate']}: {'pass' if g['passed'] else 'FAIL'} — {g['reason']}")
        for m in d.get("moves") or []:
            lines.append(f"- moved @{m['alias']}: {m['from']} → {m['to']} ({m['action']})")
        lines.append(f"- gate file version {d.get('gate_config_version')}, hash {d.get('gate_config_digest')}")
    note = "\n".join(lines)
    return note if len(note) <= limit else note[: limit - 40].rstrip() + "\n… (the task log has every gate)"


def write_note(note: str, *, dag_id: str, run_id: str, settings: AirflowSettings | None = None) -> str | None:
    """Set ``note`` on the Airflow run through the REST API. Returns it, or None: no API configured, or the API
    refused (logged, never raised: a note must never fail the task)."""
    settings = settings or AirflowSettings()
    password = _password(settings)
    if settings.api_url is None or password is None:
        logger.info("SHADOWGATE_AIRFLOW_API_URL / _PASSWORD_FILE not set: the run's note is not written")
        return None
    from shadowgate.local.airflow_rest import AirflowRest

    try:
        with AirflowRest(settings.api_url, username=settings.api_user, password=password, timeout_s=10) as api:
            api.set_note(dag_id, run_id, note)
    except Exception as error:  # a note must never fail the task: whatever went wrong, say so and go on
        logger.warning("could not write the run's note (%s): what it says is in the task log", error)
        return None
    return note
