"""``drift_check``: one day of served decisions against the models' training references (statistics in
:mod:`shadowgate.evaluation.drift`).

The day's inputs exactly as logged in ``prediction_logs`` (the contract's drift columns) are compared with the
**champion's** reference, and every model's score with **its own** reference's scores. One decision for the day;
per column its PSI, threshold and verdict go to the warehouse table ``drift_reports`` (the day's rows replaced on a
re-run) and to one MLflow run per day (found by its key ``drift/<day>``: a re-run updates it), whose description says
the verdict in a sentence. Drift and unseen categories are alert conditions like the evaluation's: sent once while
they hold, with a next step.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import logging
import math
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from shadowgate.config import DriftSettings
from shadowgate.contract import drift_columns
from shadowgate.evaluation.drift import CATEGORICAL, DriftDecision, ReferenceProfile, check_day
from shadowgate.evaluation.estimates import Estimate, estimate
from shadowgate.pipelines.alerts import Alert, Check, record_alerts
from shadowgate.pipelines.performance import pivot_scores
from shadowgate.registry import CHAMPION
from shadowgate.storage.references import SCORE, MlflowReferenceStore, ReferenceMissingError
from shadowgate.storage.results import ResultsStore, RunRecord
from shadowgate.storage.warehouse import DRIFT_REPORTS, PERFORMANCE_ESTIMATES, Warehouse, arrow_schema

logger = logging.getLogger(__name__)

SOURCE = "drift_check"
METHOD = "psi"


@dataclass(frozen=True)
class DriftSummary:
    """What one day's check did (JSON-able through :meth:`as_dict`, shown in the Airflow UI)."""

    day: str
    rows: int
    verdict: str
    """``drift``, ``unseen_categories``, ``stable``, ``too_few_rows``, ``no_champion`` or ``no_reference``."""
    drifted_columns: tuple[str, ...] = ()
    unseen_columns: tuple[str, ...] = ()
    champion: str | None = None
    models: tuple[str, ...] = ()
    profiles_computed: tuple[str, ...] = ()
    mlflow_run_id: str | None = None
    mlflow_url: str | None = None
    alerts_raised: tuple[dict[str, str], ...] = ()
    """The alerts this run sent (severity, title, text): the run's note."""
    sentence: str = ""
    skipped: tuple[str, ...] = field(default_factory=tuple)
    estimates: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per model (``alias@version``): the estimated default rate and AUC on the day's approved decisions."""
    matured: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per model: the estimate of the day whose final labels matured with this run, beside the realised figures."""
    challengers: dict[str, str] = field(default_factory=dict)
    """Per challenger (``alias@version``): the verdict on the day's inputs against its own training reference (its
    drift and unseen-category alerts block its promotion)."""

    @property
    def found(self) -> bool:
        return self.verdict in ("drift", "unseen_categories")

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "rows": self.rows,
            "verdict": self.verdict,
            "drift_found": self.found,
            "drifted_columns": list(self.drifted_columns),
            "unseen_columns": list(self.unseen_columns),
            "champion": self.champion,
            "models": list(self.models),
            "profiles_computed": list(self.profiles_computed),
            "mlflow_run_id": self.mlflow_run_id,
            "mlflow_url": self.mlflow_url,
            "alerts_raised": [dict(a) for a in self.alerts_raised],
            "challengers": dict(self.challengers),
            "sentence": self.sentence,
            "skipped": list(self.skipped),
            "estimates": self.estimates,
            "matured": self.matured,
        }


def score_column(alias: str, version: str) -> str:
    return f"score:{alias}@{version}"


def metric_name(column: str) -> str:
    """A column's name as MLflow takes it in a metric name (no ``@``): ``score:champion@1`` → ``score:champion/v1``."""
    return column.replace("@", "/v")


def combined_profile(champion: ReferenceProfile, scores: Mapping[str, ReferenceProfile]) -> ReferenceProfile:
    """The champion's input columns and every model's own ``score`` column (renamed ``score:<alias>@<version>``)."""
    columns = [c for c in champion.columns if c.name != SCORE]
    for name, profile in scores.items():
        try:
            columns.append(replace(profile.column(SCORE), name=name))
        except KeyError:
            logger.warning("the reference of %s holds no score column: its score is not checked", name)
    return replace(champion, columns=tuple(columns))


def verdict_sentence(day: dt.date, decision: DriftDecision, *, champion: str) -> str:
    """The day's verdict in one sentence, with the next step."""
    if decision.drift or decision.unseen_columns:
        parts = []
        for name in decision.drifted_columns:
            c = decision.column(name)
            parts.append(f"{name} (PSI {c.psi:.3f} > {c.threshold:.3f})")
        for name in decision.unseen_columns:
            c = decision.column(name)
            seen = ", ".join(f"{v} ×{k}" for v, k in c.unseen_values)
            parts.append(f"{name} has {100 * c.unseen_share:.1f}% values never seen in training ({seen})")
        return (
            f"{day}: the inputs moved away from {champion}'s training reference on {decision.rows:,} decisions — "
            + "; ".join(parts)
            + ". Check the feed of these columns; if the change is real, the retraining DAG follows the drift asset."
        )
    return (
        f"{day}: no drift on {decision.rows:,} decisions against {champion}'s training reference "
        f"({len(decision.columns)} columns checked; largest PSI "
        f"{max((c.psi for c in decision.columns if not math.isnan(c.psi)), default=float('nan')):.3f})."
    )


def _checks(day: dt.date, decision: DriftDecision, *, model: str, at: str) -> list[Check]:
    """The alert conditions of one model's check (``model``: whose training reference the day was compared with)."""
    checks = []
    for c in decision.columns:
        alert = None
        if c.drifted:
            alert = Alert(
                title=f"drift: {c.column} moved away from {model}'s training reference",
                text=(
                    f"{day}: PSI {c.psi:.3f} above its threshold {c.threshold:.3f} on {c.n:,} values. "
                    "Check the feed of this column; if the change is real, retrain (retrain_challenger follows "
                    "the drift asset) and watch the weekly evaluation."
                ),
                severity="warning",
                source=SOURCE,
                details={"day": day.isoformat(), "psi": c.psi, "threshold": c.threshold, "n": c.n},
                at=at,
                kind="drift",
                subject=model,
                condition=c.column,
            )
        checks.append(Check(kind="drift", subject=model, condition=c.column, alert=alert))
        if c.kind == CATEGORICAL:
            unseen = None
            if c.column in decision.unseen_columns:
                unseen = Alert(
                    title=f"unseen categories: {100 * c.unseen_share:.1f}% of {c.column} never seen in training",
                    text=(
                        f"{day}: {', '.join(f'{v} ×{k}' for v, k in c.unseen_values)}. The models score these as "
                        "'other'. Check whether the values are new business (retrain) or a feed error."
                    ),
                    severity="warning",
                    source=SOURCE,
                    details={"day": day.isoformat(), "share": c.unseen_share, "values": list(c.unseen_values)},
                    at=at,
                    kind="unseen_category",
                    subject=model,
                    condition=c.column,
                )
            checks.append(Check(kind="unseen_category", subject=model, condition=c.column, alert=unseen))
    return checks


def _report_rows(
    day: dt.date, decision: DriftDecision, *, versions: Mapping[str, str], run_id: str | None, at: dt.datetime
) -> pa.Table:
    rows = [
        {
            "report_id": f"{day.isoformat()}/{c.column}",
            "window_start": day,
            "window_end": day + dt.timedelta(days=1),
            "model_version": versions.get(c.column, versions["inputs"]),
            "column_name": c.column,
            "method": METHOD,
            "statistic": None if math.isnan(c.psi) else c.psi,
            "threshold": None if math.isinf(c.threshold) else c.threshold,
            "drifted": c.drifted,
            "n": c.n,
            "unseen_share": c.unseen_share if c.kind == CATEGORICAL else None,
            "mlflow_run_id": run_id,
            "computed_at": at,
        }
        for c in decision.columns
    ]
    return pa.Table.from_pylist(rows, schema=arrow_schema(DRIFT_REPORTS))


def _estimate_rows(
    day: dt.date, estimates: Mapping[tuple[str, str], Estimate], *, at: dt.datetime
) -> list[dict[str, Any]]:
    def finite(value: float) -> float | None:
        return None if math.isnan(value) else value

    return [
        {
            "estimate_id": f"{day.isoformat()}/{alias}@{version}",
            "day": day,
            "alias": alias,
            "model_version": version,
            "population": "approved",
            "n": e.n,
            "expected_defaults": e.expected_defaults,
            "default_rate": finite(e.default_rate),
            "default_rate_low": finite(e.default_rate_low),
            "default_rate_high": finite(e.default_rate_high),
            "auc": finite(e.auc),
            "auc_low": finite(e.auc_low),
            "auc_high": finite(e.auc_high),
            "computed_at": at,
        }
        for (alias, version), e in estimates.items()
    ]


def _write_estimates(warehouse: Warehouse, rows: list[dict[str, Any]], *, batch_id: str) -> None:
    if not rows:
        return
    batch = pa.Table.from_pylist(rows, schema=arrow_schema(PERFORMANCE_ESTIMATES))
    warehouse.merge(PERFORMANCE_ESTIMATES, staging=warehouse.stage(PERFORMANCE_ESTIMATES, batch, batch_id=batch_id))


def realised_on_matured_day(
    warehouse: Warehouse, matured: dt.date, *, as_of: dt.datetime
) -> dict[tuple[str, str], dict[str, Any]]:
    """Per model, the realised default rate and AUC of the approved decisions of ``matured`` whose final label is
    known at ``as_of`` (the weekly evaluation's query, for one day)."""
    from shadowgate.evaluation.metrics import binary_metrics

    start = dt.datetime.combine(matured, dt.time(), dt.UTC)
    table = warehouse.run(
        "queries/weekly_cohort",
        {"cohort_start": start, "cohort_end": start + dt.timedelta(days=1), "label": "final", "as_of": as_of},
    )
    if table.num_rows == 0:
        return {}
    y = np.asarray(table.column("defaulted").to_numpy(zero_copy_only=False), dtype=bool)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for key, values in pivot_scores(table.column("scores"), table.num_rows).items():
        scored = ~np.isnan(values)
        truth = y[scored]
        auc = binary_metrics(truth.astype(int), values[scored]).auc if 0 < truth.sum() < len(truth) else float("nan")
        out[(key.alias, key.version)] = {
            "realised_n": int(scored.sum()),
            "realised_defaults": int(truth.sum()),
            "realised_default_rate": float(truth.mean()) if len(truth) else None,
            "realised_auc": None if math.isnan(auc) else auc,
        }
    return out


def _matured_pass(warehouse: Warehouse, matured: dt.date, *, as_of: dt.datetime) -> dict[str, dict[str, float]]:
    """Write the realised figures of ``matured`` beside its estimates; returns both per model for the run's page."""
    realised = realised_on_matured_day(warehouse, matured, as_of=as_of)
    rows = [
        {
            "estimate_id": f"{matured.isoformat()}/{alias}@{version}",
            "day": matured,
            "alias": alias,
            "model_version": version,
            "population": "approved",
            **figures,
            "realised_as_of": as_of,
        }
        for (alias, version), figures in realised.items()
    ]
    _write_estimates(warehouse, rows, batch_id=f"realised_{matured:%Y%m%d}")
    if not realised:
        return {}
    found = warehouse.run("queries/estimates_of_day", {"day": matured}).to_pylist()
    return {
        f"{r.pop('alias')}@{r.pop('model_version')}": r for r in found if (r["alias"], r["model_version"]) in realised
    }


def _columns_csv(decision: DriftDecision, path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["column", "kind", "n", "psi", "threshold", "noise", "drifted", "unseen_share", "unseen"])
        for c in decision.columns:
            writer.writerow(
                [
                    c.column,
                    c.kind,
                    c.n,
                    f"{c.psi:.6f}",
                    f"{c.threshold:.6f}",
                    f"{c.noise:.6f}",
                    c.drifted,
                    f"{c.unseen_share:.6f}",
                    "; ".join(f"{v}={k}" for v, k in c.unseen_values),
                ]
            )


def check_drift(
    *,
    warehouse: Warehouse,
    models: Mapping[str, tuple[str, str | None]],
    references: MlflowReferenceStore,
    results: ResultsStore,
    day: dt.date,
    settings: DriftSettings,
    send: Callable[[Alert], object],
    render_report: Callable[[Any, Any, Path], str] | None = None,
) -> DriftSummary:
    """Check one day (purchase time in ``[day, day + 1)``), estimate each model's figures on its approved decisions,
    and put the realised figures beside the estimates of the day whose final labels matured with this run.

    Args:
        warehouse: holds ``prediction_logs``; receives ``drift_reports`` and ``alerts``.
        models: alias → (version, training run id) of the registered models (the champion's reference holds the
            inputs; every model's its own scores).
        references: reads (and the first time bins and stores) each version's reference.
        results: the MLflow experiment of the daily runs.
        day: the day checked.
        settings: thresholds and the report's sample size.
        send: delivers an alert that begins to hold.
        render_report: (reference sample, day sample, out dir) → the HTML file's name; None: no report.
    """
    at = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    stamp = at.isoformat()
    if CHAMPION not in models:
        return DriftSummary(day=day.isoformat(), rows=0, verdict="no_champion", sentence="no @champion registered")
    champion_version, champion_run = models[CHAMPION]
    champion = f"{CHAMPION}@{champion_version}"
    computed, skipped = [], []
    try:
        champion_ref = references.profile(champion_version, champion_run)
    except ReferenceMissingError as error:
        # A champion registered by hand (or trained before references were logged): nothing to compare with. Said
        # every day, never a failed task that retries to no end.
        sentence = f"{day}: {champion} has no training reference ({error}): not checked; retrain it to get one"
        logger.warning(sentence)
        return DriftSummary(day=day.isoformat(), rows=0, verdict="no_reference", champion=champion, sentence=sentence)
    if champion_ref.computed:
        computed.append(champion)
    score_profiles: dict[str, ReferenceProfile] = {}
    challenger_profiles: dict[str, ReferenceProfile] = {}
    versions = {"inputs": champion_version}
    for alias, (version, run_id) in sorted(models.items()):
        name = score_column(alias, version)
        try:
            ref = champion_ref if alias == CHAMPION else references.profile(version, run_id)
        except ReferenceMissingError as error:
            skipped.append(f"{alias}@{version}: {error}")
            continue
        if ref.computed and alias != CHAMPION:
            computed.append(f"{alias}@{version}")
        score_profiles[name] = ref.profile
        versions[name] = version
        if alias != CHAMPION:
            challenger_profiles[f"{alias}@{version}"] = ref.profile
    profile = combined_profile(champion_ref.profile, score_profiles)

    columns = drift_columns()
    names = [*columns.numerical, *columns.categorical]
    table = warehouse.run(
        "queries/drift_day",
        {"day_start": at - dt.timedelta(days=1), "day_end": at},
        columns=", ".join(names),
    )
    rows = table.num_rows
    # The day whose final labels matured with this run: its estimates get the realised figures beside them.
    matured_day = day - dt.timedelta(days=settings.estimate_maturity_days)
    matured = _matured_pass(warehouse, matured_day, as_of=at)
    if rows < settings.min_rows:
        sentence = f"{day}: {rows} decisions, fewer than {settings.min_rows}: not judged"
        logger.info(sentence)
        return DriftSummary(
            day=day.isoformat(),
            rows=rows,
            verdict="too_few_rows",
            matured=matured,
            champion=champion,
            sentence=sentence,
            skipped=tuple(skipped),
        )
    current: dict[str, Any] = {n: table.column(n).to_numpy(zero_copy_only=False) for n in names}
    scores = pivot_scores(table.column("scores"), rows)
    for key, values in scores.items():
        name = score_column(key.alias, key.version)
        if name in versions:
            current[name] = values[~np.isnan(values)]
    decision = check_day(
        profile,
        current,
        floor=settings.psi_floor,
        alpha=settings.alpha,
        unseen_alert_share=settings.unseen_alert_share,
    )
    approved = np.asarray(table.column("decision").to_numpy(zero_copy_only=False)) == "approve"
    estimates: dict[tuple[str, str], Estimate] = {}
    for key, values in scores.items():
        if score_column(key.alias, key.version) in versions:
            chosen = values[approved & ~np.isnan(values)]
            estimates[(key.alias, key.version)] = estimate(chosen, seed=day.toordinal())
    verdict = "drift" if decision.drift else ("unseen_categories" if decision.unseen_columns else "stable")
    sentence = verdict_sentence(day, decision, champion=champion)
    checks = _checks(day, decision, model=champion, at=stamp)
    # Each challenger's inputs against its own training reference: what the promotion gate blocks on (a challenger
    # trained on data from before a shift is not promoted while the shift holds; one trained after it is).
    challenger_drift: dict[str, str] = {}
    for name, own_profile in sorted(challenger_profiles.items()):
        inputs_only = replace(own_profile, columns=tuple(c for c in own_profile.columns if c.name != SCORE))
        own = check_day(
            inputs_only,
            {n: current[n] for n in names},
            floor=settings.psi_floor,
            alpha=settings.alpha,
            unseen_alert_share=settings.unseen_alert_share,
        )
        challenger_drift[name] = "drift" if own.drift else ("unseen_categories" if own.unseen_columns else "stable")
        checks += _checks(day, own, model=name, at=stamp)
    recorded = record_alerts(warehouse, checks, at=at, send=send)
    raised = tuple(
        {"severity": c.alert.severity, "title": c.alert.title, "text": c.alert.text}
        for c in checks
        if c.alert is not None and c.alert.title in recorded.sent
    )

    experiment_id = results.ensure_experiment(
        settings.experiment,
        tags={
            "mlflow.note.content": "One run per day: the served inputs and every model's score against the "
            "models' training references (PSI per column, one decision per day). Written by drift_check.",
            "mlflow.experimentKind": "custom_model_development",
        },
    )
    metrics: dict[str, float] = {
        "rows": float(rows),
        "drift": float(decision.drift),
        "unseen_alert": float(bool(decision.unseen_columns)),
    }
    for c in decision.columns:
        name = metric_name(c.column)
        metrics[f"psi.{name}"] = c.psi
        metrics[f"threshold.{name}"] = c.threshold
        if c.kind == CATEGORICAL:
            metrics[f"unseen_share.{name}"] = c.unseen_share
    for (alias, version), e in estimates.items():
        name = f"{alias}/v{version}"
        for figure in ("default_rate", "default_rate_low", "default_rate_high", "auc", "auc_low", "auc_high"):
            metrics[f"estimate.{figure}.{name}"] = getattr(e, figure)
    description = sentence + "\n\n" + _estimates_text(day, estimates, matured_day, matured)
    if recorded.sent:
        description += "\n\n**Alerts raised this day** (each sent once while it holds):\n\n" + "\n".join(
            f"- {title}" for title in recorded.sent
        )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        _columns_csv(decision, out / "drift_columns.csv")
        if render_report is not None:
            sample_day = _sample(table, names, settings.report_rows, seed=day.toordinal())
            render_report(references.sample(champion_run)[names], sample_day, out)
        run = results.record(
            experiment_id,
            RunRecord(
                key=f"drift/{day.isoformat()}",
                name=f"drift: {day.isoformat()} · {champion}",
                params={"day": day.isoformat(), "method": METHOD},
                tags={
                    "shadowgate.verdict": verdict,
                    "shadowgate.day": day.isoformat(),
                    "shadowgate.champion": champion,
                    "shadowgate.models": ", ".join(sorted(f"{a}@{v}" for a, (v, _) in models.items())),
                    "shadowgate.drifted_columns": ", ".join(decision.drifted_columns) or "-",
                    "shadowgate.unseen_columns": ", ".join(decision.unseen_columns) or "-",
                    "shadowgate.psi_floor": str(settings.psi_floor),
                    "shadowgate.alpha": str(settings.alpha),
                    "shadowgate.report_sample": f"at most {settings.report_rows:,} of the day's rows, seeded; "
                    "the verdict uses every row",
                    "mlflow.note.content": description,
                },
                metrics=metrics,
                step=0,
                timestamp_ms=int(at.timestamp() * 1000) - 1,
                artifacts_dir=out,
            ),
        )
    _write_estimates(warehouse, _estimate_rows(day, estimates, at=at), batch_id=f"estimates_{day:%Y%m%d}")
    batch = _report_rows(day, decision, versions=versions, run_id=run.run_id, at=at)
    warehouse.merge(
        DRIFT_REPORTS,
        staging=warehouse.stage(DRIFT_REPORTS, batch, batch_id=f"drift_{day:%Y%m%d}"),
        params={"window_start": day},
    )
    return DriftSummary(
        day=day.isoformat(),
        rows=rows,
        verdict=verdict,
        drifted_columns=decision.drifted_columns,
        unseen_columns=decision.unseen_columns,
        champion=champion,
        models=tuple(sorted(f"{a}@{v}" for a, (v, _) in models.items())),
        profiles_computed=tuple(computed),
        mlflow_run_id=run.run_id,
        mlflow_url=results.run_url(experiment_id, run.run_id),
        alerts_raised=raised,
        sentence=sentence,
        skipped=tuple(skipped),
        estimates={
            f"{a}@{v}": {"default_rate": e.default_rate, "auc": e.auc, "n": float(e.n)}
            for (a, v), e in estimates.items()
        },
        matured=matured,
        challengers=challenger_drift,
    )


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.2f}%"


def _num(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def _estimates_text(
    day: dt.date,
    estimates: Mapping[tuple[str, str], Estimate],
    matured_day: dt.date,
    matured: Mapping[str, Mapping[str, Any]],
) -> str:
    """The estimates in words (labelled as estimates), and the matured day's estimate beside what happened."""
    lines = [
        f"**Estimates** from each model's own scores on {day}'s approved decisions (not measured; they cannot see a "
        "concept shift and never feed the promotion gate):",
        "",
    ]
    for (alias, version), e in sorted(estimates.items()):
        lines.append(
            f"- {alias}@{version}: default rate {_pct(e.default_rate)} (95 % range {_pct(e.default_rate_low)}–"
            f"{_pct(e.default_rate_high)}), AUC {_num(e.auc)} ({_num(e.auc_low)}–{_num(e.auc_high)}) on {e.n:,}"
        )
    if matured:
        lines += ["", f"**{matured_day}: final labels matured** — estimated then, realised now:", ""]
        for name, r in sorted(matured.items()):
            lines.append(
                f"- {name}: default rate estimated {_pct(r.get('default_rate'))}, realised "
                f"{_pct(r.get('realised_default_rate'))}; AUC estimated {_num(r.get('auc'))}, realised "
                f"{_num(r.get('realised_auc'))} ({r.get('realised_n') or 0:,} decisions)"
            )
    return "\n".join(lines)


def _sample(table: pa.Table, names: list[str], limit: int, *, seed: int) -> Any:
    """At most ``limit`` of the day's rows (seeded), as a pandas frame of the input columns, for the report."""
    rows = table.num_rows
    if rows > limit:
        pick = np.sort(np.random.default_rng(seed).choice(rows, limit, replace=False))
        table = table.take(pa.array(pick))
    return table.select(names).to_pandas()


@contextlib.contextmanager
def drift_inputs(day: dt.date) -> Iterator[dict[str, Any]]:
    """The arguments of :func:`check_drift` resolved from the environment's settings, for the DAG: the warehouse,
    the registered models (alias → version and training run), the reference store, the MLflow results store, the
    settings, the shared alert path and Evidently's report."""
    from shadowgate.config import AlertSettings, MLflowSettings, PathSettings, WarehouseSettings
    from shadowgate.evaluation.drift import render_evidently_report
    from shadowgate.pipelines.alerts import send_alert
    from shadowgate.registry import ModelRegistry
    from shadowgate.storage import open_warehouse
    from shadowgate.storage.results import MlflowResultsStore

    settings = DriftSettings()
    mlflow_settings = MLflowSettings()
    registry = ModelRegistry(tracking_uri=mlflow_settings.tracking_uri, model_name=mlflow_settings.model_name)
    models: dict[str, tuple[str, str | None]] = {}
    for alias in registry.aliases():
        version = registry.version(alias)
        if version is not None:
            models[alias] = (version.version, version.run_id)
    columns = drift_columns()
    url = AlertSettings().webhook_url
    webhook = url.get_secret_value() if url else None
    warehouse = open_warehouse(WarehouseSettings(), home=PathSettings().home)
    try:
        yield {
            "warehouse": warehouse,
            "models": models,
            "references": MlflowReferenceStore(
                mlflow_settings.tracking_uri,
                categorical=columns.categorical,
                numerical=columns.numerical,
                bins=settings.bins,
            ),
            "results": MlflowResultsStore(mlflow_settings.tracking_uri),
            "day": day,
            "settings": settings,
            "send": lambda alert: send_alert(alert, webhook_url=webhook),
            "render_report": render_evidently_report,
        }
    finally:
        warehouse.close()
