"""Join served decisions with their outcomes once the payment cycle has run: two labels per approved decision, kept
as they were known at every instant.

A daily run for the data interval ``(start, end]`` works **as of** ``end`` and labels the decisions whose maturity
instant falls in that window:

* **early** — instalment 2 (the first after checkout) late or missed, or a default, known by ``event_timestamp +
  early_maturity_days`` (17) plus the grace window ``early_grace_hours`` (24); the decision's first label version is
  written then;
* **final** — a ``default`` known by ``event_timestamp + maturity_days`` (90); a new version then.

Point in time: an outcome counts once it has **arrived** (when shadowgate received it, or the delivery a replay
states: :func:`shadowgate.events.outcome.arrival`) by the run's as-of instant, and it decides a label only if it is
dated within the label's horizon. Time is always the purchase's and the outcomes' own, never the wall clock, so a
backfill of a past day sees only what had reached the system then and a re-run writes identical rows.

Labels are versioned, never overwritten: ``labeled_predictions`` holds a row per (decision, ``labeled_as_of``), a
new one only when a label changed, so the labels known at any instant are each decision's latest version by then
(``queries/weekly_cohort.sql``). A deciding outcome delivered **late** — after its label had matured — is found by the
run of the day it arrives (among the purchases of ``late_outcome_lookback_days``), counted, and gives the decision a
new version; every cohort week whose labels changed so is recorded in ``label_revisions`` (revision number, labels
revised, late outcomes) and listed by :func:`weeks_to_reevaluate` once it was evaluated before the revision.
``relabel_days`` widens the window backwards, to label again a range of days.

Only approved decisions are labelled: a denied applicant got no credit, and a manual review's final answer is not
logged, so a purchase granted after review is counted (``manual_review_with_outcome``: it has outcomes) and left out
of the labels and the evaluation.

The rules live in the warehouse SQL (``include/sql/queries/ground_truth_labels.sql``, versioned by
``merge/labeled_predictions.sql``, revisions by ``merge/label_revisions.sql``, counted by
``queries/ground_truth_report.sql``); this module computes the window, runs them, and alerts when the outcome feed
looks broken — as a whole, or one signal type of it — and then holds the window's labels back, so that a missing feed
never reaches the evaluation as a book without defaults.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from shadowgate.config import GroundTruthSettings
from shadowgate.pipelines.alerts import Alert, send_alert
from shadowgate.storage.warehouse import Warehouse

logger = logging.getLogger(__name__)

LABELS_MERGE = "merge/labeled_predictions"
REVISIONS_MERGE = "merge/label_revisions"
REPORT_QUERY = "queries/ground_truth_report"
SIGNAL_PROFILE_QUERY = "queries/signal_profile"
REVISIONS_QUERY = "queries/label_revisions"
REEVALUATE_QUERY = "queries/weeks_to_reevaluate"
SIGNAL_TYPES = ("instalment_paid", "instalment_late", "default")
"""The outcome signal types the feed check watches one by one."""
SIGNAL_ALERT_P = 0.001
"""A signal type alerts only when a count as low as the window's has a Poisson probability below this, given the
type's baseline rate: a quiet day of a rare type is not a dead stream."""


@dataclass(frozen=True)
class LabelWindow:
    """The instants one run works with. Every range is open below and closed above: ``(from, to]``.

    Attributes:
        as_of: the run's data interval end: labels mature at or before it, and see outcomes arrived by then only.
        window_start: the data interval start, minus ``relabel_days``: maturity instants in ``(window_start, as_of]``
            are this run's, and so are the outcomes that arrived then.
        early_from / early_to: purchase times whose early label matures in the window (the window minus
            ``early_maturity_days`` and ``early_grace_hours``).
        final_from / final_to: purchase times whose final label matures in the window (minus ``maturity_days``).
        late_from: the oldest purchase time whose outcomes delivered late in the window are looked for.
        baseline_start: the feed check compares each signal type's arrivals in the window with those in
            ``(baseline_start, window_start]``.
    """

    as_of: dt.datetime
    window_start: dt.datetime
    early_maturity_days: int
    maturity_days: int
    early_grace_hours: int = 0
    late_lookback_days: int = 0
    signal_baseline_days: int = 28

    @property
    def early_delay(self) -> dt.timedelta:
        """Purchase to early maturity: ``early_maturity_days`` plus the grace window."""
        return dt.timedelta(days=self.early_maturity_days, hours=self.early_grace_hours)

    @property
    def early_from(self) -> dt.datetime:
        return self.window_start - self.early_delay

    @property
    def early_to(self) -> dt.datetime:
        return self.as_of - self.early_delay

    @property
    def final_from(self) -> dt.datetime:
        return self.window_start - dt.timedelta(days=self.maturity_days)

    @property
    def final_to(self) -> dt.datetime:
        return self.as_of - dt.timedelta(days=self.maturity_days)

    @property
    def late_from(self) -> dt.datetime:
        # Never after final_from: the outcomes of every cohort purchase are read.
        return self.window_start - dt.timedelta(days=max(self.late_lookback_days, self.maturity_days))

    @property
    def baseline_start(self) -> dt.datetime:
        return self.window_start - dt.timedelta(days=self.signal_baseline_days)

    @property
    def days(self) -> float:
        """The window's length in days."""
        return (self.as_of - self.window_start) / dt.timedelta(days=1)

    def params(self) -> dict[str, Any]:
        """The query parameters of the shipped statements."""
        from shadowgate.features import NEW_CUSTOMER_DAYS

        return {
            "as_of": self.as_of,
            "window_start": self.window_start,
            "early_from": self.early_from,
            "early_to": self.early_to,
            "final_from": self.final_from,
            "final_to": self.final_to,
            "late_from": self.late_from,
            "baseline_start": self.baseline_start,
            "early_maturity_hours": self.early_maturity_days * 24 + self.early_grace_hours,
            "maturity_days": self.maturity_days,
            # The decision policies' new-customer rule (customer_tenure_days < NEW_CUSTOMER_DAYS), one definition.
            "new_customer_days": NEW_CUSTOMER_DAYS,
            # The oldest cohort week a revision of this run can be about.
            "since": _week_start(self.late_from),
        }


def _week_start(instant: dt.datetime) -> dt.date:
    day = instant.date()
    return day - dt.timedelta(days=day.weekday())


def _utc(instant: dt.datetime, name: str) -> dt.datetime:
    if instant.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (got {instant!r})")
    # A plain datetime (Airflow passes pendulum's subclass), in UTC: what both warehouses' parameters take.
    utc = instant.astimezone(dt.UTC)
    return dt.datetime(*utc.timetuple()[:6], utc.microsecond, tzinfo=dt.UTC)


def last_complete_day(instant: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The last whole UTC day that ended at or before ``instant``: the interval of a daily run triggered by hand
    without a logical date (Airflow 3 gives such a run no data interval)."""
    end = _utc(instant, "instant").replace(hour=0, minute=0, second=0, microsecond=0)
    return end - dt.timedelta(days=1), end


def label_window(
    *, interval_start: dt.datetime, interval_end: dt.datetime, settings: GroundTruthSettings, relabel_days: int = 0
) -> LabelWindow:
    """The window of the run for the data interval ``(interval_start, interval_end]``.

    Raises:
        ValueError: naive or reversed instants, or a negative ``relabel_days``.
    """
    start, end = _utc(interval_start, "interval_start"), _utc(interval_end, "interval_end")
    if end <= start:
        raise ValueError(f"interval_end ({end}) must be after interval_start ({start})")
    if relabel_days < 0:
        raise ValueError(f"relabel_days must be >= 0 (got {relabel_days})")
    return LabelWindow(
        as_of=end,
        window_start=start - dt.timedelta(days=relabel_days),
        early_maturity_days=settings.early_maturity_days,
        maturity_days=settings.maturity_days,
        early_grace_hours=settings.early_grace_hours,
        late_lookback_days=settings.late_outcome_lookback_days,
        signal_baseline_days=settings.signal_baseline_days,
    )


Label = Literal["early", "final"]


@dataclass(frozen=True)
class LabelRevision:
    """A revision of one cohort week's labels (a row of ``label_revisions``): labels that had matured were changed
    by outcomes delivered after that."""

    cohort_start: dt.date
    """The week's Monday (purchases of ``[cohort_start, cohort_start + 7 days)``, UTC)."""
    label: Label
    revision: int
    """1 for the week's first revision of that label (in ``detected_at`` order); the latest one for a pair listed by
    :func:`weeks_to_reevaluate`."""
    detected_at: dt.datetime
    """The as-of instant of the run that wrote the changed labels (the latest one for a listed pair)."""
    labels_revised: int
    """Decisions of the week whose label changed (summed over the revisions for a listed pair)."""
    late_outcomes: int
    """The outcomes deciding those labels that arrived after the previous label version (summed likewise)."""
    evaluated_as_of: dt.datetime | None = None
    """For a pair listed by :func:`weeks_to_reevaluate`: the as-of instant of its latest evaluation."""

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["cohort_start"] = self.cohort_start.isoformat()
        out["detected_at"] = self.detected_at.isoformat()
        out["evaluated_as_of"] = self.evaluated_as_of.isoformat() if self.evaluated_as_of else None
        return out


@dataclass(frozen=True)
class SignalFlow:
    """One outcome signal type's arrivals in a run's window against its baseline rate."""

    event_type: str
    arrived: int
    """Signals of the type that arrived in the window."""
    expected: float
    """Arrivals the baseline's rate per purchase at each age predicts for the window's purchases of each age."""
    p_value: float
    """Poisson probability of ``arrived`` or fewer given ``expected`` (1.0 without a baseline)."""

    def dead(self, *, drop_ratio: float) -> bool:
        """Fewer than ``drop_ratio`` of the expected arrivals, and improbably few (:data:`SIGNAL_ALERT_P`)."""
        return self.arrived < drop_ratio * self.expected and self.p_value < SIGNAL_ALERT_P


@dataclass(frozen=True)
class GroundTruthSummary:
    """What one ``join_ground_truth`` run found and wrote, as of its data interval end.

    The cohorts are the decisions whose early or final maturity instant falls in the run's window.
    """

    as_of: dt.datetime
    window_start: dt.datetime
    """The window is ``(window_start, as_of]`` (the data interval, widened by ``relabel_days``)."""
    early_maturity_days: int
    early_grace_hours: int
    maturity_days: int
    approved: int
    """Approved decisions of the cohorts: the ones labelled."""
    denied_no_outcome_expected: int
    """Denied decisions of the cohorts: the applicant got no credit, so no outcome exists and none is labelled."""
    denied_with_outcome: int
    """Denied decisions with an outcome known all the same: outcomes joined to the wrong decisions if not 0."""
    manual_review_unlabeled: int
    """Manual-review decisions of the cohorts: never labelled, and **excluded from the evaluation** (the reviewer's
    final answer is not logged, so which of them got credit is only guessed from their outcomes)."""
    manual_review_with_outcome: int
    """Of those, the ones with an outcome known: granted after review, and excluded all the same."""
    early_matured: int
    """Approved decisions whose early label matured in the window."""
    early_defaults: int
    """Of those, the early-labelled bad ones (instalment 2 late or missed, or a default)."""
    final_matured: int
    """Approved decisions whose final label matured in the window."""
    final_defaults: int
    """Of those, the defaults."""
    pending_final: int
    """Approved decisions of the last ``maturity_days`` (up to ``as_of``): final label not matured yet."""
    approved_without_outcome: int
    """Approved decisions of the cohorts with no outcome at all that had arrived by ``as_of``."""
    outcomes_in_window: int
    """Outcome events that arrived in the window (any transaction)."""
    late_early_outcomes: int
    """Outcomes deciding an early label (instalment 2 late, a default) that arrived in the window after that label
    had matured (before the window): delivered late."""
    late_final_outcomes: int
    """Defaults deciding a final label that arrived in the window after that label had matured."""
    labeled: int
    """Label versions of ``labeled_predictions`` inserted or rewritten (0 when held back)."""
    revisions: tuple[LabelRevision, ...]
    """The (cohort week, label) pairs whose matured labels this run changed: recorded in ``label_revisions``; a
    week evaluated before is to be evaluated again (:func:`weeks_to_reevaluate`)."""
    signals: tuple[SignalFlow, ...]
    """Each signal type's arrivals in the window against its baseline (the per-type feed check)."""
    held_back: bool
    """The outcome feed looked broken: alerted, and nothing was written."""
    alerts: tuple[str, ...]
    """Why the feed looked broken (empty when it did not)."""

    @property
    def no_outcome_share(self) -> float:
        """Share of the approved decisions of the cohorts with no outcome arrived by ``as_of``."""
        return self.approved_without_outcome / self.approved if self.approved else 0.0

    @property
    def late_outcomes(self) -> int:
        """Outcomes delivered late found by this run (both labels)."""
        return self.late_early_outcomes + self.late_final_outcomes

    def as_dict(self) -> dict[str, Any]:
        """JSON-able (the Airflow task's return value)."""
        out = asdict(self)
        out["as_of"], out["window_start"] = self.as_of.isoformat(), self.window_start.isoformat()
        out["alerts"] = list(self.alerts)
        out["no_outcome_share"] = round(self.no_outcome_share, 6)
        out["late_outcomes"] = self.late_outcomes
        out["revisions"] = [r.as_dict() for r in self.revisions]
        out["signals"] = {
            f.event_type: {"arrived": f.arrived, "expected": round(f.expected, 3), "p_value": f.p_value}
            for f in self.signals
        }
        return out


_COUNTS = (
    "approved",
    "denied_no_outcome_expected",
    "denied_with_outcome",
    "manual_review_unlabeled",
    "manual_review_with_outcome",
    "early_matured",
    "early_defaults",
    "final_matured",
    "final_defaults",
    "pending_final",
    "approved_without_outcome",
    "outcomes_in_window",
    "late_early_outcomes",
    "late_final_outcomes",
)


def signal_flows(profile: Sequence[Mapping[str, Any]], window: LabelWindow) -> tuple[SignalFlow, ...]:
    """Each signal type's arrivals in the window and their expectation from the baseline (``queries/signal_profile``
    rows: approved purchases per day, and arrivals per type, purchase day and arrival day).

    The expectation is age-adjusted: a type's baseline rate per purchase at each age (days from purchase to arrival)
    times the purchases of that age during the window. So when the book shrinks — a replayed quarter ends, a season
    turns — payments are expected to thin out with it, and only a type that stops while its purchases are still of
    an age to send it alerts. Ages the baseline never saw add nothing to the expectation.
    """
    # The Poisson CDF itself (scipy.stats would cost a second of imports on every run).
    from scipy.special import pdtr

    purchases: dict[dt.date, int] = {}
    arrivals: dict[str, list[tuple[dt.date, dt.date, int]]] = {kind: [] for kind in SIGNAL_TYPES}
    for r in profile:
        if r["kind"] == "purchases":
            purchases[r["purchase_day"]] = int(r["n"])
        elif r["kind"] in arrivals:
            arrivals[r["kind"]].append((r["purchase_day"], r["arrival_day"], int(r["n"])))
    window_days = _days(window.window_start.date(), window.as_of.date())
    baseline_days = _days(window.baseline_start.date(), window.window_start.date())

    def exposure(days: list[dt.date]) -> dict[int, int]:
        """Purchases of each age summed over the days."""
        out: dict[int, int] = {}
        for day in days:
            for bought, n in purchases.items():
                age = (day - bought).days
                if age >= 0:
                    out[age] = out.get(age, 0) + n
        return out

    in_window, in_baseline = exposure(window_days), exposure(baseline_days)
    out = []
    for kind in SIGNAL_TYPES:
        seen_window = seen_baseline = 0
        by_age: dict[int, int] = {}
        for bought, arrived_on, n in arrivals[kind]:
            if arrived_on >= window.window_start.date():
                seen_window += n
            elif arrived_on >= window.baseline_start.date():
                seen_baseline += n
                age = (arrived_on - bought).days
                by_age[age] = by_age.get(age, 0) + n
        expected = sum(
            n / in_baseline[age] * in_window.get(age, 0) for age, n in by_age.items() if in_baseline.get(age)
        )
        p_value = float(pdtr(seen_window, expected)) if expected > 0 else 1.0
        out.append(SignalFlow(event_type=kind, arrived=seen_window, expected=expected, p_value=p_value))
    return tuple(out)


def _days(first: dt.date, end: dt.date) -> list[dt.date]:
    """The days of [first, end) (at least the first: a window shorter than a day is that day)."""
    return [first + dt.timedelta(days=k) for k in range(max((end - first).days, 1))]


def feed_problems(
    counts: dict[str, int],
    *,
    max_no_outcome_share: float,
    signals: tuple[SignalFlow, ...] = (),
    drop_ratio: float = 0.5,
) -> list[str]:
    """Why the outcome feed looks broken, judged by a run's counts (empty: it does not).

    Every approved pay-in-N purchase has instalment 2 paid or late by day 17, so a matured approved decision with
    no outcome arrived means the outcomes did not arrive: too many such decisions, or none at all in the window while
    there are matured decisions, and the labels would show a book without defaults. And each signal type on its own:
    payments flowing say nothing of the defaults, so a type that arrived far below its baseline rate
    (:meth:`SignalFlow.dead`) is a broken stream, whatever the others do.
    """
    problems = []
    approved = counts["approved"]
    if approved:
        share = counts["approved_without_outcome"] / approved
        if share > max_no_outcome_share:
            problems.append(
                f"{counts['approved_without_outcome']} of {approved} matured approved decisions ({share:.1%}) have no"
                f" outcome known (threshold {max_no_outcome_share:.1%})"
            )
        if counts["outcomes_in_window"] == 0:
            problems.append(f"no outcome at all known in the window, with {approved} matured approved decisions")
    problems.extend(
        f"{f.event_type} signals: {f.arrived} arrived in the window, {f.expected:.1f} expected from the baseline"
        f" (below {drop_ratio:.0%} of it, Poisson p = {f.p_value:.2g})"
        for f in signals
        if f.dead(drop_ratio=drop_ratio)
    )
    return problems


def join_ground_truth(
    warehouse: Warehouse,
    *,
    interval_start: dt.datetime,
    interval_end: dt.datetime,
    settings: GroundTruthSettings,
    relabel_days: int = 0,
    webhook_url: str | None = None,
) -> GroundTruthSummary:
    """Label the approved decisions whose early or final label matures in ``(interval_start, interval_end]``, and
    those an outcome was delivered late for in it.

    Counts the run's cohorts (the report), checks the outcome feed, and — unless the feed looks broken — MERGEs the
    labels into ``labeled_predictions`` as new versions (on ``prediction_id`` and ``labeled_as_of``), then records
    the cohort weeks whose matured labels changed in ``label_revisions``. A broken feed is alerted (``send_alert``)
    and the window's labels are held back: re-run the interval once the outcomes are in (or a later run with
    ``relabel_days``).

    Args:
        warehouse: where ``prediction_logs`` and ``outcomes`` are, and ``labeled_predictions`` and
            ``label_revisions`` go.
        interval_start: the data interval's start (exclusive).
        interval_end: its end (inclusive): the as-of instant.
        settings: maturity delays, the grace window, the late-outcome lookback and the feed checks.
        relabel_days: widen the window by this many days backwards (labels again what matured then, with the
            outcomes arrived now; a label an earlier run wrote is only replaced by a computed one, never by NULL).
        webhook_url: where alerts are posted besides the log (``AlertSettings.webhook_url``).

    Raises:
        ValueError: naive or reversed instants, or a negative ``relabel_days``.
    """
    window = label_window(
        interval_start=interval_start, interval_end=interval_end, settings=settings, relabel_days=relabel_days
    )
    warehouse.ensure_tables()
    params = window.params()
    [row] = warehouse.run(REPORT_QUERY, params).to_pylist()
    counts = {name: int(row[name] or 0) for name in _COUNTS}
    profile_start = window.baseline_start - dt.timedelta(days=window.maturity_days)
    signals = signal_flows(
        warehouse.run(SIGNAL_PROFILE_QUERY, {**params, "profile_start": profile_start}).to_pylist(), window
    )
    problems = feed_problems(
        counts,
        max_no_outcome_share=settings.no_outcome_alert_share,
        signals=signals,
        drop_ratio=settings.signal_drop_ratio,
    )
    revisions: tuple[LabelRevision, ...] = ()
    if problems:
        send_alert(
            Alert(
                title="join_ground_truth: the outcome feed looks broken",
                text=(
                    f"as of {window.as_of.isoformat()}: " + "; ".join(problems) + ". Labels of the window"
                    f" ({window.window_start.isoformat()}, {window.as_of.isoformat()}] are held back: fix the"
                    " outcome feed, then re-run this interval (or a later one with relabel_days)."
                ),
                details={
                    "as_of": window.as_of.isoformat(),
                    **counts,
                    **{f"arrived_{f.event_type}": f.arrived for f in signals},
                    **{f"expected_{f.event_type}": round(f.expected, 1) for f in signals},
                },
            ),
            webhook_url=webhook_url,
        )
        labeled = 0
    else:
        labeled = warehouse.execute(LABELS_MERGE, params)
        warehouse.execute(REVISIONS_MERGE, params)
        revisions = tuple(_revision(r) for r in warehouse.run(REVISIONS_QUERY, params).to_pylist())
    summary = GroundTruthSummary(
        as_of=window.as_of,
        window_start=window.window_start,
        early_maturity_days=window.early_maturity_days,
        early_grace_hours=window.early_grace_hours,
        maturity_days=window.maturity_days,
        **counts,
        labeled=labeled,
        revisions=revisions,
        signals=signals,
        held_back=bool(problems),
        alerts=tuple(problems),
    )
    if counts["denied_with_outcome"]:
        logger.warning(
            "%d denied decisions have outcomes: a denied applicant gets no credit; check the outcome producer's "
            "transaction ids",
            counts["denied_with_outcome"],
        )
    if revisions:
        logger.warning(
            "join_ground_truth as of %s: %d outcomes delivered late revised the labels of %s; evaluated weeks among "
            "them are to be evaluated again (weeks_to_reevaluate)",
            window.as_of.isoformat(),
            summary.late_outcomes,
            ", ".join(f"{r.cohort_start} {r.label} (revision {r.revision})" for r in revisions),
        )
    logger.info("join_ground_truth as of %s: %s", window.as_of.isoformat(), summary.as_dict())
    return summary


def _revision(row: dict[str, Any]) -> LabelRevision:
    return LabelRevision(
        cohort_start=row["cohort_start"],
        label=row["label"],
        revision=int(row["revision"]),
        detected_at=_utc(row["detected_at"], "detected_at"),
        labels_revised=int(row["labels_revised"]),
        late_outcomes=int(row["late_outcomes"]),
        evaluated_as_of=_utc(row["evaluated_as_of"], "evaluated_as_of") if row.get("evaluated_as_of") else None,
    )


def weeks_to_reevaluate(warehouse: Warehouse, *, as_of: dt.datetime, lookback_days: int = 365) -> list[LabelRevision]:
    """The (cohort week, label) pairs evaluated on labels that were revised afterwards: a ``label_revisions`` row
    detected by ``as_of`` and after the week's latest evaluation in ``model_metrics``. ``weekly_performance`` runs
    them again (as of its own instant, so on the revised labels); once it has, they are no longer listed.

    Weeks never evaluated are not listed: their first evaluation sees the revised labels.

    Args:
        warehouse: where ``label_revisions`` and ``model_metrics`` are.
        as_of: revisions detected after it are not considered (a backfill sees what was known then; evaluations are
            as ``model_metrics`` holds them now).
        lookback_days: cohort weeks starting more than this many days before ``as_of`` are not looked at.

    Raises:
        ValueError: a naive ``as_of``.
    """
    as_of = _utc(as_of, "as_of")
    warehouse.ensure_tables()
    since = _week_start(as_of - dt.timedelta(days=lookback_days))
    rows = warehouse.run(REEVALUATE_QUERY, {"as_of": as_of, "since": since}).to_pylist()
    return [_revision(r) for r in rows]
