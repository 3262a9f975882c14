"""The note an Airflow run carries when it raised alerts: errors first, each with its next step, within Airflow's
1,000 characters; nothing written (and nothing raised) without an API to write it to."""

from __future__ import annotations

import json
from pathlib import Path

from shadowgate.config import AirflowSettings
from shadowgate.pipelines.run_notes import NOTE_LIMIT, _password, note_alerts, render_note

RISE = {
    "cohort": "2026-W35",
    "label": "final",
    "severity": "error",
    "title": "champion@1: 37% more defaults than it predicts, beyond its own baseline (final label)",
    "text": "observed/expected defaults 0.898 vs 0.657 — check recalibration or retraining",
}
VERDICT = {
    "cohort": "2026-W36",
    "label": "final",
    "severity": "info",
    "title": "shadow-challenger: verdict superior at look 9",
    "text": "challenger@2 beats champion@1 by more than the margin 0.01 — it may be promoted.",
}


def test_the_note_leads_with_the_worst_alert_then_lists_errors_first_with_cohort_and_next_step() -> None:
    note = render_note([VERDICT, RISE])
    assert note.splitlines() == [
        f"**ERROR** {RISE['title']} (+1 more alert)",
        "",
        f"- **ERROR** [2026-W35 final] {RISE['title']}: {RISE['text']}",
        f"- **INFO** [2026-W36 final] {VERDICT['title']}: {VERDICT['text']}",
        "",
        "Raised by this run; each condition is sent once while it holds.",
    ]
    assert render_note([VERDICT]).splitlines()[0] == f"**INFO** {VERDICT['title']}"


def test_a_long_note_is_cut_to_airflows_limit_and_says_where_the_rest_is() -> None:
    note = render_note([RISE] * 20)
    assert len(note) <= NOTE_LIMIT and note.endswith("… (the task log has every alert)")


def test_no_alert_no_note_and_no_api_no_write(tmp_path: Path) -> None:
    assert note_alerts({"alerts_raised": []}, dag_id="d", run_id="r") is None
    unset = AirflowSettings(api_url=None)
    assert note_alerts({"alerts_raised": [RISE]}, dag_id="d", run_id="r", settings=unset) is None
    # An API that does not answer: logged, never raised (the alerts went out by the log, the table, the webhook).
    secret = tmp_path / "passwords.json"
    secret.write_text(json.dumps({"admin": "pw"}))
    down = AirflowSettings(api_url="http://127.0.0.1:9", api_password_file=secret)
    assert note_alerts({"alerts_raised": [RISE]}, dag_id="d", run_id="r", settings=down) is None


def test_the_password_file_is_plain_text_or_the_simple_auth_managers_json(tmp_path: Path) -> None:
    plain, generated = tmp_path / "plain", tmp_path / "generated.json"
    plain.write_text("s3cret\n")
    generated.write_text(json.dumps({"admin": "from-json", "other": "x"}))
    assert _password(AirflowSettings(api_password_file=plain)) == "s3cret"
    assert _password(AirflowSettings(api_password_file=generated)) == "from-json"
    assert _password(AirflowSettings(api_password_file=tmp_path / "missing")) is None


def test_mlflow_links_open_the_model_training_view() -> None:
    """MLflow 3 opens on its GenAI traces unless the link asks for the model-training view (the browser's choice;
    an experiment tag does not change it): every link shadowgate prints carries the view."""
    from shadowgate.storage.results import mlflow_ui_url

    assert (
        mlflow_ui_url("http://127.0.0.1:5000/", "2")
        == "http://127.0.0.1:5000/#/experiments/2?workflowType=machine_learning"
    )
    assert (
        mlflow_ui_url("http://h:5000", "2", "abc")
        == "http://h:5000/#/experiments/2/runs/abc?workflowType=machine_learning"
    )
