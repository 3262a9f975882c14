"""The weekly performance report as files: PNG charts and one self-contained HTML page (for MLflow artifacts).

The HTML works offline: the charts are embedded as base64 ``data:`` URIs and there is no external CSS, script or font.
Every value written into it — model names, segment values, comparison rows — goes through :func:`html.escape`.
Charts are drawn on a :class:`matplotlib.figure.Figure` with the Agg canvas directly, so rendering never touches
pyplot's global state or the process-wide backend.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shadowgate.evaluation.performance import ModelPerformance, PolicyOutcome

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

ROC_PNG = "roc_curves.png"
CALIBRATION_PNG = "calibration_curves.png"
SCORES_PNG = "score_distributions.png"
REPORT_HTML = "performance_report.html"

METRIC_COLUMNS = (
    "n",
    "n_positive",
    "observed_rate",
    "mean_score",
    "auc",
    "auc_se",
    "pr_auc",
    "ks",
    "brier",
    "log_loss",
    "ece",
)
SELECTION_COLUMNS = ("cohort_approval_rate", "cohort_denied")
"""The cohort's selection shown next to each model's figures (every decision of the week, not only the labelled)."""

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; }
td.text, th.text { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
.note { color: #555; font-size: 0.9em; }
.verdict { font-size: 1.1em; background: #f4f8ff; border-left: 4px solid #2c6fd1; padding: 0.6em 0.9em; }
td.thin { color: #999; }
"""

SEGMENT_MIN_DEFAULTS = 30
"""Default for ``segment_min_defaults``: a segment's AUC on fewer defaults is not shown (its standard error is
about 0.05 or more: noise, not a finding)."""

COMPARISON_LABELS: dict[str, str] = {
    "experiment_id": "experiment",
    "treatment": "challenger (treatment)",
    "control": "champion (control)",
    "n": "requests compared (identical for both)",
    "n_positive": "defaults among them",
    "auc_treatment": "AUC of the challenger",
    "auc_control": "AUC of the champion",
    "auc_difference": "AUC difference this week (challenger − champion)",
    "auc_difference_ci_low": "… its 95 % interval, low",
    "auc_difference_ci_high": "… its 95 % interval, high",
    "auc_difference_se": "… its standard error (DeLong, clustered by customer)",
    "delong_z": "DeLong z this week",
    "delong_p_value": "DeLong p-value this week (two-sided)",
    "holm_p_value": "… adjusted across challengers (Holm)",
    "brier_difference": "Brier score difference (negative: challenger better calibrated)",
    "brier_difference_ci_low": "… its 95 % bootstrap interval, low",
    "brier_difference_ci_high": "… its 95 % bootstrap interval, high",
    "decisions_disagree": "requests the two would decide differently at the policy's cut-off",
    "mcnemar_statistic": "McNemar statistic (who decides right more often)",
    "mcnemar_p_value": "McNemar p-value",
    "margin": "margin the challenger must beat (AUC)",
    "look": "look of the comparison plan",
    "information_fraction": "share of the plan's information reached",
    "sequential_estimate": "AUC difference, all looks so far combined",
    "sequential_se": "… its standard error",
    "sequential_z": "z against the margin, all looks combined",
    "efficacy_bound": "superior when z reaches",
    "futility_bound": "futile when z falls below",
    "verdict": "verdict of the plan",
    "arm_approval_rate_control": "canary: approval rate of the champion's arm",
    "arm_approval_rate_treatment": "canary: approval rate of the challenger's arm",
    "arm_approval_rate_p_value": "canary: approval rates differ, p-value",
    "arm_default_rate_control": "canary: defaults among the champion arm's approved (a description only)",
    "arm_default_rate_treatment": "canary: defaults among the challenger arm's approved (a description only)",
    "arm_loss_per_applicant_control": "canary: loss per applicant, champion's arm",
    "arm_loss_per_applicant_treatment": "canary: loss per applicant, challenger's arm",
    "arm_loss_per_applicant_difference": "canary: loss per applicant, difference",
    "arm_loss_per_applicant_p_value": "canary: loss per applicant, p-value",
    "arm_defaults_per_applicant_difference": "canary: defaults per applicant, difference",
    "arm_defaults_per_applicant_p_value": "canary: defaults per applicant, p-value",
    "arm_treatment_better": "canary: the challenger's arm did better per applicant",
    "srm_p_value": "canary: observed vs designed split, p-value (SRM)",
    "srm_flagged": "canary: split mismatch flagged",
    "srm_periods": "canary: allocation periods combined",
}
"""Words for the comparison's figures, in display order; a figure not listed here is not shown in the report (it
stays in ``model_metrics`` and MLflow)."""


def _figure(width: float, height: float) -> Figure:
    # A Figure bound to the Agg canvas: no pyplot, no process-wide backend switch, safe in worker threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    # No "Software" entry: the PNG carries nothing but the picture.
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _colors(models: Iterable[str]) -> dict[str, str]:
    """One colour per model (matplotlib's default cycle), the same in every chart."""
    return {model: f"C{i % 10}" for i, model in enumerate(models)}


def _label(text: str) -> str:
    """Chart text shown literally: a ``$`` would otherwise start matplotlib mathtext (and can fail to parse)."""
    return text.replace("$", r"\$")


def roc_curves_png(metrics: Mapping[str, ModelPerformance]) -> bytes:
    """Every model's ROC curve on one chart, AUC in the legend; a model without a curve (one class) is listed only."""
    fig = _figure(6.5, 6.0)
    ax = fig.add_subplot()
    for model, color in _colors(metrics).items():
        m = metrics[model]
        ax.plot(m.roc.fpr, m.roc.tpr, color=color, label=_label(f"{model} (AUC {_fmt(m.auc)})"))
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance")
    ax.set(xlabel="false positive rate (repaid flagged)", ylabel="true positive rate (defaults flagged)")
    ax.set(xlim=(0, 1), ylim=(0, 1), title="ROC curves")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return _png(fig)


def calibration_curves_png(metrics: Mapping[str, ModelPerformance]) -> bytes:
    """Every model's reliability curve (equal-mass bins) on one chart, ECE in the legend."""
    fig = _figure(6.5, 6.0)
    ax = fig.add_subplot()
    top = 0.0
    for model, color in _colors(metrics).items():
        curve = metrics[model].reliability
        ax.plot(
            curve.mean_predicted,
            curve.observed_rate,
            marker="o",
            color=color,
            label=_label(f"{model} (ECE {_fmt(metrics[model].ece)})"),
        )
        top = max(top, *curve.mean_predicted, *curve.observed_rate)
    # PDs of a BNPL book are small: zoom to the data, keep the axes square so the diagonal is the diagonal.
    top = min(1.0, max(top * 1.05, 1e-3))
    ax.plot([0, top], [0, top], linestyle=":", color="grey", label="perfect calibration")
    ax.set(xlim=(0, top), ylim=(0, top), xlabel="mean predicted PD (bin)", ylabel="observed default rate (bin)")
    ax.set_title("Calibration (equal-mass bins)")
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    return _png(fig)


def score_distributions_png(metrics: Mapping[str, ModelPerformance]) -> bytes:
    """One panel per model: score densities of defaults and of repaid requests."""
    models = list(metrics)
    fig = _figure(7.0, 2.4 * max(len(models), 1))
    axes = fig.subplots(max(len(models), 1), 1, squeeze=False)[:, 0]
    for ax, model in zip(axes, models, strict=False):
        hist = metrics[model].score_histogram
        edges = np.asarray(hist.edges)
        counts = {"defaulted": np.asarray(hist.count_default), "repaid": np.asarray(hist.count_repaid)}
        occupied = np.flatnonzero(counts["defaulted"] + counts["repaid"])
        right = edges[occupied[-1] + 1] if len(occupied) else 1.0
        for (name, count), color in zip(counts.items(), ("tab:red", "tab:blue"), strict=True):
            total = count.sum()
            if total:
                ax.stairs(count / total / np.diff(edges), edges, color=color, label=f"{name} (n={total:,})")
        ax.set_xlim(0, right)
        ax.set_title(_label(model), fontsize="medium")
        ax.set_ylabel("density")
        ax.legend(fontsize="small")
    axes[-1].set_xlabel("score (PD)")
    fig.tight_layout()
    return _png(fig)


def _fmt(value: Any) -> str:
    """A cell's text (not yet escaped): counts with separators, floats to 4 significant digits, missing as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        return "n/a" if math.isnan(value) else f"{float(value):.4g}"
    return str(value)


def _table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, text_columns: int = 1) -> str:
    """An HTML table; every header and cell escaped. The first ``text_columns`` columns are left-aligned labels."""

    def cell(tag: str, i: int, value: Any) -> str:
        cls = ' class="text"' if i < text_columns else ""
        return f"<{tag}{cls}>{html.escape(_fmt(value))}</{tag}>"

    head = "".join(cell("th", i, c) for i, c in enumerate(columns))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>\n" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}</table>\n"


def _applies(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _worded(figure: str, value: Any) -> Any:
    if figure == "verdict" and isinstance(value, str):
        return value.replace("_", " ")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if figure == "information_fraction" and isinstance(value, float):
        return f"{value:.0%}"
    return value


def _comparison_table(comparisons: Sequence[Mapping[str, Any]]) -> str:
    """One column per comparison, one row per figure in words (a comparison has ~30 figures: as columns they
    overflow); a figure that applies to none of them (a canary's arm figures in a shadow experiment, a look's figures
    on a week without one) is left out."""
    rows = []
    for figure, words in COMPARISON_LABELS.items():
        values = [row.get(figure) for row in comparisons]
        if any(_applies(v) for v in values):
            rows.append([words, *(_worded(figure, v) if _applies(v) else "—" for v in values)])
    header = ["", *(f"{row.get('treatment', '')} vs {row.get('control', '')}" for row in comparisons)]
    return _table(header, rows)


def _segment_rows(segments: pd.DataFrame, min_defaults: int) -> Iterable[list[Any]]:
    for row in segments.itertuples(index=False):
        values = list(row)
        if int(row.n_positive) < min_defaults:
            values[list(segments.columns).index("auc")] = f"not shown ({int(row.n_positive)} defaults)"
        yield values


def _image(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def render_report_html(
    *,
    week: str,
    label: str,
    population: str,
    metrics: Mapping[str, ModelPerformance],
    comparisons: Sequence[Mapping[str, Any]],
    segments: pd.DataFrame | None,
    policy: Mapping[str, PolicyOutcome] | None,
    images: Mapping[str, bytes],
    selection: Mapping[str, float] | None = None,
    verdicts: Sequence[str] = (),
    segment_min_defaults: int = SEGMENT_MIN_DEFAULTS,
) -> str:
    """The report page (see :func:`render_week_report`); ``images`` maps a caption to the PNG to embed."""
    n = _common_n(metrics)
    e = html.escape
    chosen = dict(selection or {})
    shown = [c for c in SELECTION_COLUMNS if c in chosen]
    parts = [
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
        f"<title>{e(f'Model performance, cohort week {week}')}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n",
        f"<h1>Model performance — cohort week {e(week)}</h1>\n",
        *(f'<p class="verdict">{e(v)}</p>\n' for v in verdicts),
        f"<p>Population: {e(population)}, N = {e(_fmt(n))}. Label: {e(label)}. Models: {e(', '.join(metrics))}.</p>\n",
        '<p class="note">Every figure is computed on this population only, the same requests for every model. '
        "For approved and matured decisions that means how each model ranks, and would re-decide, customers the "
        "lender already approved — not the full applicant pool. ECE and the calibration chart use "
        f"{e(' / '.join(sorted({str(m.n_bins) for m in metrics.values()})))} equal-mass bins; KS is two-sided.</p>\n",
        _selection_note(chosen),
        "<h2>Metrics</h2>\n",
        _table(
            ("model", *METRIC_COLUMNS, *shown),
            ((m, *(getattr(metrics[m], c) for c in METRIC_COLUMNS), *(chosen[c] for c in shown)) for m in metrics),
        ),
        '<p class="note">AUC and KS are n/a when only one outcome occurs (n_positive of 0 or N); '
        "PR-AUC is n/a without defaults.</p>\n",
    ]
    parts.append("<h2>Comparisons</h2>\n")
    parts.append(_comparison_table(comparisons) if comparisons else "<p>No comparisons.</p>\n")
    if policy:
        parts.append("<h2>Policy outcomes</h2>\n")
        parts.append(
            '<p class="note">Deny at PD ≥ high, manual review at PD ≥ medium, approve below; segment overrides and '
            'business rules are not replayed. Each figure names the rows it is computed on; "all rows given" is the '
            "population above — purchases the serving model already approved, so the serving model re-approves "
            "(nearly) all of them by construction: its approval rate here is close to 100 %, and another model's "
            "rate says how many of those approvals it would have declined or referred, not how many applicants it "
            "would approve.</p>\n"
        )
        setting = [("high", "cut-off"), ("medium", "cut-off"), ("lgd", "assumption")]
        rows: list[list[Any]] = [[name, kind, *(getattr(o, name) for o in policy.values())] for name, kind in setting]
        figures = [o.figures() for o in policy.values()]
        for i, (name, _, computed_on) in enumerate(figures[0]):
            rows.append([name, computed_on, *(f[i][1] for f in figures)])
        parts.append(_table(("figure", "computed on", *policy), rows, text_columns=2))
    if segments is not None:
        parts.append("<h2>Segments</h2>\n")
        parts.append(
            f'<p class="note">The same population split by each column. A segment\'s AUC on fewer than '
            f"{segment_min_defaults} defaults is not shown: its standard error is about 0.05 or more, so a difference "
            "there is noise, not a finding (the counts and rates still are).</p>\n"
        )
        parts.append(_table(list(segments.columns), _segment_rows(segments, segment_min_defaults), text_columns=3))
    parts.append("<h2>Charts</h2>\n")
    for caption, png in images.items():
        parts.append(f"<h3>{e(caption)}</h3>\n{_image(png, caption)}\n")
    parts.append("</body>\n</html>\n")
    return "".join(parts)


def _selection_note(selection: Mapping[str, float]) -> str:
    """The cohort's selection in words: how many applicants the labelled rows stand for."""
    if not selection:
        return ""
    figures = {k: _fmt(int(v) if k != "cohort_approval_rate" and math.isfinite(v) else v) for k, v in selection.items()}
    rate = selection.get("cohort_approval_rate", math.nan)
    return (
        f'<p class="selection">Selection: {html.escape(figures.get("cohort_decisions", "n/a"))} decisions in the '
        f"cohort week, approval rate {html.escape('n/a' if not math.isfinite(rate) else f'{rate:.1%}')}, "
        f"{html.escape(figures.get('cohort_denied', 'n/a'))} denied, "
        f"{html.escape(figures.get('cohort_manual_review', 'n/a'))} referred to manual review. Only approved "
        "purchases have an outcome: every figure below describes the approved share of the applicants, and an AUC "
        "on it is lower than on all applicants (the champion's cut-off removed the applicants it ranks riskiest)."
        "</p>\n"
    )


def _common_n(metrics: Mapping[str, ModelPerformance]) -> int:
    if not metrics:
        raise ValueError("no models to report")
    sizes = {model: m.n for model, m in metrics.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"models were evaluated on different populations (n per model: {sizes})")
    return next(iter(sizes.values()))


def render_week_report(
    out_dir: Path,
    *,
    week: str,
    label: str,
    population: str,
    metrics: Mapping[str, ModelPerformance],
    comparisons: Sequence[Mapping[str, Any]] = (),
    segments: pd.DataFrame | None = None,
    policy: Mapping[str, PolicyOutcome] | None = None,
    selection: Mapping[str, float] | None = None,
    verdicts: Sequence[str] = (),
    segment_min_defaults: int = SEGMENT_MIN_DEFAULTS,
) -> list[Path]:
    """Write the week's charts and HTML report into ``out_dir`` (created if missing; files of the same name replaced).

    Args:
        out_dir: where the files go (log them as MLflow artifacts afterwards).
        week: the cohort week as shown in the header (e.g. ``2026-W47``).
        label: which outcome label, e.g. ``early`` or ``final``.
        population: what the rows are, e.g. ``approved and matured decisions``; N is taken from ``metrics``.
        metrics: model name → :func:`~shadowgate.evaluation.performance.model_performance` on the population, in
            display order (every model on the same rows: the ``n`` must agree).
        comparisons: rows of paired comparisons (DeLong, bootstrap, ...), each a mapping column → value; columns are
            the union of the rows' keys in first-seen order.
        segments: the :func:`~shadowgate.evaluation.performance.segment_table`, or None.
        policy: model name → :func:`~shadowgate.evaluation.performance.policy_outcomes`, or None.
        selection: the cohort week's decisions (``cohort_decisions``, ``cohort_approval_rate``, ``cohort_denied``,
            ``cohort_manual_review``: every decision, not only the labelled), shown in the header and next to each
            model's figures; None when unknown.
        verdicts: one sentence per comparison (who is ahead, by how much, the plan's look, the next step), shown
            first.
        segment_min_defaults: a segment's AUC on fewer defaults is not shown.

    Returns:
        The files written: the ROC, calibration and score-distribution PNGs, then the HTML report.

    Raises:
        ValueError: when ``metrics`` is empty or the models' ``n`` differ.
    """
    _common_n(metrics)
    charts = {
        ROC_PNG: ("ROC curves", roc_curves_png(metrics)),
        CALIBRATION_PNG: ("Calibration", calibration_curves_png(metrics)),
        SCORES_PNG: ("Score distributions", score_distributions_png(metrics)),
    }
    page = render_report_html(
        week=week,
        label=label,
        population=population,
        metrics=metrics,
        comparisons=comparisons,
        segments=segments,
        policy=policy,
        images=dict(charts.values()),
        selection=selection,
        verdicts=verdicts,
        segment_min_defaults=segment_min_defaults,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (_, png) in charts.items():
        (out_dir / name).write_bytes(png)
        written.append(out_dir / name)
    (out_dir / REPORT_HTML).write_text(page, encoding="utf-8")
    return [*written, out_dir / REPORT_HTML]
