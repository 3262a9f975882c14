"""The weekly report files: valid PNGs, an offline HTML page with every model and every value escaped."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import numpy as np
import pytest

from shadowgate.decisioning.policies import Thresholds
from shadowgate.evaluation.performance import model_performance, policy_outcomes, segment_table
from shadowgate.evaluation.report import (
    CALIBRATION_PNG,
    REPORT_HTML,
    ROC_PNG,
    SCORES_PNG,
    render_week_report,
    roc_curves_png,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SEGMENT_MIN = 200
HOSTILE = '<script>alert("x")</script> & co'


@pytest.fixture(scope="module")
def week() -> dict[str, object]:
    import pandas as pd

    rng = np.random.default_rng(8)
    n = 3_000
    pd_true = rng.beta(1.0, 12.0, n)
    y = (rng.random(n) < pd_true).astype(int)
    frame = pd.DataFrame(
        {
            "defaulted": y,
            "champion": pd_true,
            "challenger": np.clip(pd_true + rng.normal(0, 0.03, n), 0, 1),
            "hostile": rng.random(n) * 0.2,
            "channel": rng.choice(["web", "app", "<b>pos</b>"], n),
        }
    )
    models = {"champion": "champion", "challenger-v2": "challenger", HOSTILE: "hostile"}
    amounts = rng.uniform(20, 800, n)
    thresholds = Thresholds(high=0.5, medium=0.25)
    return {
        "metrics": {m: model_performance(y, frame[c]) for m, c in models.items()},
        "policy": {m: policy_outcomes(frame[c], y, thresholds=thresholds, amounts=amounts) for m, c in models.items()},
        "segments": segment_table(frame, label_col="defaulted", score_cols=models, segment_cols=["channel"]),
        "comparisons": [
            {
                "treatment": "challenger-v2",
                "control": "champion",
                "auc_difference": -0.0123,
                "delong_p_value": "<0.001",
                "crossed": False,
                "srm_p_value": None,
                "verdict": "not_shown",
            },
            {
                "treatment": HOSTILE,
                "control": "champion",
                "auc_difference": float("nan"),
                "arm_treatment_better": False,
                "srm_p_value": float("nan"),
                "verdict": "continue",
            },
        ],
    }


def _render(tmp_path: Path, week: dict[str, object]) -> tuple[list[Path], str]:
    paths = render_week_report(
        tmp_path / "report",
        week="2026-W47",
        label="final",
        population="approved and matured decisions",
        metrics=week["metrics"],  # type: ignore[arg-type]
        comparisons=week["comparisons"],  # type: ignore[arg-type]
        segments=week["segments"],  # type: ignore[arg-type]
        policy=week["policy"],  # type: ignore[arg-type]
        verdicts=["challenger-v2 is behind champion by 0.0123 AUC — retire it."],
        segment_min_defaults=SEGMENT_MIN,
    )
    return paths, (tmp_path / "report" / REPORT_HTML).read_text(encoding="utf-8")


def test_writes_three_valid_pngs_and_the_html(tmp_path: Path, week: dict[str, object]) -> None:
    paths, _ = _render(tmp_path, week)
    assert [p.name for p in paths] == [ROC_PNG, CALIBRATION_PNG, SCORES_PNG, REPORT_HTML]
    for png in paths[:3]:
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert len(data) > 10_000, f"{png.name} is suspiciously small ({len(data)} bytes)"
        assert b"IEND" in data[-12:]


def test_html_is_self_contained(tmp_path: Path, week: dict[str, object]) -> None:
    paths, page = _render(tmp_path, week)
    assert not re.search(r"https?://", page, flags=re.IGNORECASE)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert "<script" not in page  # the hostile model name is escaped, and the page has no script of its own
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert [base64.b64decode(e) for e in embedded] == [p.read_bytes() for p in paths[:3]]
    assert len(re.findall(r"<img ", page)) == 3


def test_html_names_the_cohort_every_model_and_escapes_every_value(tmp_path: Path, week: dict[str, object]) -> None:
    _, page = _render(tmp_path, week)
    assert "cohort week 2026-W47" in page
    assert "Population: approved and matured decisions, N = 3,000. Label: final." in page
    for model in ("champion", "challenger-v2"):
        assert f'<td class="text">{model}</td>' in page
    assert html.escape(HOSTILE) in page and HOSTILE not in page
    assert "&lt;b&gt;pos&lt;/b&gt;" in page and "<b>pos</b>" not in page  # a segment value
    assert "&lt;0.001" in page  # a comparison value
    # The verdict sentence comes first, before any table.
    assert page.index('<p class="verdict">challenger-v2 is behind champion by 0.0123 AUC — retire it.</p>') < (
        page.index("<table>")
    )
    # One column per comparison, one row per figure in words; a figure one comparison lacks shows a dash, a figure
    # none has (a canary's split test in a shadow experiment) and the internal flags are left out.
    assert (
        '<tr><td class="text">canary: the challenger&#x27;s arm did better per applicant</td><td>—</td><td>no</td></tr>'
        in page
    )
    assert '<td class="text">verdict of the plan</td><td>not shown</td><td>continue</td>' in page
    assert "SRM" not in page and "crossed" not in page and "srm_p_value" not in page
    assert "-0.0123" in page
    # A segment's AUC on fewer defaults than the threshold is not shown, its counts are.
    segments = week["segments"]  # type: ignore[index]
    thin = segments[segments["n_positive"] < SEGMENT_MIN]
    assert len(thin) > 0 and page.count("not shown (") == len(thin)
    for row in thin.itertuples():
        assert f"not shown ({row.n_positive} defaults)" in page
    m = week["metrics"]["champion"]  # type: ignore[index]
    assert f"<td>{m.auc:.4g}</td>" in page
    assert "<td>3,000</td>" in page  # counts stay integers
    assert "rows this model approves" in page  # each policy figure names its population


def test_models_on_different_populations_are_refused(tmp_path: Path) -> None:
    small = model_performance(np.array([0, 1]), np.array([0.1, 0.9]))
    large = model_performance(np.array([0, 1, 1]), np.array([0.1, 0.9, 0.8]))
    with pytest.raises(ValueError, match="different populations"):
        render_week_report(tmp_path, week="w", label="early", population="p", metrics={"a": small, "b": large})
    with pytest.raises(ValueError, match="no models"):
        render_week_report(tmp_path, week="w", label="early", population="p", metrics={})
    assert list(tmp_path.iterdir()) == []


def test_one_class_week_and_mathtext_names_still_render(tmp_path: Path) -> None:
    repaid = model_performance(np.zeros(50, dtype=int), np.linspace(0.0, 0.3, 50))
    paths = render_week_report(
        tmp_path, week="w", label="early", population="p", metrics={"a $\\bad$ name": repaid, "$x^$": repaid}
    )
    page = paths[-1].read_text(encoding="utf-8")
    assert "a $\\bad$ name" in page and "n/a" in page  # names are text, never matplotlib mathtext
    assert roc_curves_png({"$x^$": repaid}).startswith(PNG_MAGIC)


def test_the_cohorts_selection_is_shown_with_every_models_figures(tmp_path: Path, week: dict[str, object]) -> None:
    selection = {
        "cohort_decisions": 3_200.0,
        "cohort_approved": 3_000.0,
        "cohort_manual_review": 150.0,
        "cohort_denied": 50.0,
        "cohort_approval_rate": 3_000 / 3_200,
    }
    render_week_report(
        tmp_path,
        week="2026-W47",
        label="final",
        population="approved and matured decisions",
        metrics=week["metrics"],  # type: ignore[arg-type]
        selection=selection,
    )
    page = (tmp_path / REPORT_HTML).read_text(encoding="utf-8")
    assert (
        "Selection: 3,200 decisions in the cohort week, approval rate 93.8%, 50 denied, 150 referred to manual review."
        in page
    )
    header = re.search(r"<tr><th class=\"text\">model</th>(.*?)</tr>", page)
    assert header is not None and header.group(1).endswith("<th>cohort_approval_rate</th><th>cohort_denied</th>")
    # Each model's row ends with the cohort's approval rate and denied count.
    assert page.count("<td>0.9375</td><td>50</td></tr>") == len(week["metrics"])  # type: ignore[arg-type]
    plain = render_week_report(
        tmp_path / "plain",
        week="w",
        label="final",
        population="p",
        metrics=week["metrics"],  # type: ignore[arg-type]
    )
    assert "Selection:" not in plain[-1].read_text(encoding="utf-8")
