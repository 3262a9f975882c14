"""Join served decisions with their outcomes once the payment cycle has run: two labels per approved decision.

A daily run for the data interval ``(start, end]`` works **as of** ``end`` and labels the decisions whose maturity
instant falls in that window, each exactly once at its maturity:

* **early** — instalment 2 (the first after checkout) late or missed, or a default, known by ``event_timestamp +
  early_maturity_days`` (17); the decision's row is inserted into ``labeled_predictions`` then;
* **final** — a ``default`` known by ``event_timestamp + maturity_days`` (90); filled into the row then.

Point in time: a label uses only outcomes known by its maturity instant (≤ the as-of instant), and time is always
the purchase's ``event_timestamp``, never the wall clock, so a backfill of a past day sees only what was known then
and a re-run writes identical rows. ``relabel_days`` widens the window backwards, to label again after outcomes
that arrived late. Only approved decisions are labelled (a denied applicant got no credit; a manual review's final
answer is not logged): they are counted in the report instead.

The rules live in the warehouse SQL (``include/sql/queries/ground_truth_labels.sql``, MERGEd by
``merge/labeled_predictions.sql``, counted by ``queries/ground_truth_report.sql``); this module computes the window,
runs them, and alerts when the outcome feed looks broken — and then holds the window's labels back, so that a missing
feed never reaches the evaluation as a book without defaults.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass
from typing import Any

from shadowgate.config import GroundTruthSettings
from shadowgate.pipelines.alerts import Alert, send_alert
from shadowgate.storage.warehouse import Warehouse

logger = logging.getLogger(__name__)

LABELS_MERGE = "merge/labeled_predictions"
REPORT_QUERY = "queries/ground_truth_report"


@dataclass(frozen=True)
class LabelWindow:
    """The instants one run works with. Every range is open below and closed above: ``(from, to]``.

    Attributes:
        as_of: the run's data interval end: labels mature at or before it, and see outcomes known by then only.
        window_start: the data interval start, minus ``relabel_days``: maturity instants in ``(window_start, as_of]``
            are this run's.
        early_from / early_to: purchase times whose early label matures in the window (the window minus
            ``early_maturity_days``).
        final_from / final_to: purchase times whose final label matures in the window (minus ``maturity_days``).
    """

    as_of: dt.datetime
    window_start: dt.datetime
    early_maturity_days: int
    maturity_days: int

    @property
    def early_from(self) -> dt.datetime:
        return self.window_start - dt.timedelta(days=self.early_maturity_days)

    @property
    def early_to(self) -> dt.datetime:
        return self.as_of - dt.timedelta(days=self.early_maturity_days)

    @property
    def final_from(self) -> dt.datetime:
        return self.window_start - dt.timedelta(days=self.maturity_days)

    @property
    def final_to(self) -> dt.datetime:
        return self.as_of - dt.timedelta(days=self.maturity_days)

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
            "early_maturity_days": self.early_maturity_days,
            "maturity_days": self.maturity_days,
            # The decision policies' new-customer rule (customer_tenure_days < NEW_CUSTOMER_DAYS), one definition.
            "new_customer_days": NEW_CUSTOMER_DAYS,
        }


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
    )


@dataclass(frozen=True)
class GroundTruthSummary:
    """What one ``join_ground_truth`` run found and wrote, as of its data interval end.

    The cohorts are the decisions whose early or final maturity instant falls in the run's window.
    """

    as_of: dt.datetime
    window_start: dt.datetime
    """The window is ``(window_start, as_of]`` (the data interval, widened by ``relabel_days``)."""
    early_maturity_days: int
    maturity_days: int
    approved: int
    """Approved decisions of the cohorts: the ones labelled."""
    denied_no_outcome_expected: int
    """Denied decisions of the cohorts: the applicant got no credit, so no outcome exists and none is labelled."""
    denied_with_outcome: int
    """Denied decisions with an outcome known all the same: outcomes joined to the wrong decisions if not 0."""
    manual_review_unlabeled: int
    """Manual-review decisions of the cohorts: not labelled (the reviewer's final answer is not logged)."""
    manual_review_with_outcome: int
    """Of those, the ones with an outcome known (credit granted after review)."""
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
    """Approved decisions of the cohorts with no outcome at all known by ``as_of``."""
    outcomes_in_window: int
    """Outcome events known in the window (any transaction)."""
    labeled: int
    """Rows of ``labeled_predictions`` inserted or updated (0 when held back)."""
    held_back: bool
    """The outcome feed looked broken: alerted, and nothing was written."""
    alerts: tuple[str, ...]
    """Why the feed looked broken (empty when it did not)."""

    @property
    def no_outcome_share(self) -> float:
        """Share of the approved decisions of the cohorts with no outcome known by ``as_of``."""
        return self.approved_without_outcome / self.approved if self.approved else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able (the Airflow task's return value)."""
        out = asdict(self)
        out["as_of"], out["window_start"] = self.as_of.isoformat(), self.window_start.isoformat()
        out["alerts"] = list(self.alerts)
        out["no_outcome_share"] = round(self.no_outcome_share, 6)
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
)


def feed_problems(counts: dict[str, int], *, max_no_outcome_share: float) -> list[str]:
    """Why the outcome feed looks broken, judged by a run's counts (empty: it does not).

    Every approved pay-in-N purchase has instalment 2 paid or late by day 17, so a matured approved decision with
    no outcome known means the outcomes did not arrive: too many such decisions, or none at all in the window while
    there are matured decisions, and the labels would show a book without defaults.
    """
    approved = counts["approved"]
    if not approved:
        return []
    problems = []
    share = counts["approved_without_outcome"] / approved
    if share > max_no_outcome_share:
        problems.append(
            f"{counts['approved_without_outcome']} of {approved} matured approved decisions ({share:.1%}) have no"
            f" outcome known (threshold {max_no_outcome_share:.1%})"
        )
    if counts["outcomes_in_window"] == 0:
        problems.append(f"no outcome at all known in the window, with {approved} matured approved decisions")
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
    """Label the approved decisions whose early or final label matures in ``(interval_start, interval_end]``.

    Counts the run's cohorts (the report), checks the outcome feed, and — unless the feed looks broken — MERGEs the
    labels into ``labeled_predictions`` on ``prediction_id``. A broken feed is alerted (``send_alert``) and the
    window's labels are held back: re-run the interval once the outcomes are in (or a later run with
    ``relabel_days``).

    Args:
        warehouse: where ``prediction_logs`` and ``outcomes`` are, and ``labeled_predictions`` goes.
        interval_start: the data interval's start (exclusive).
        interval_end: its end (inclusive): the as-of instant.
        settings: maturity delays and the alert threshold.
        relabel_days: widen the window by this many days backwards (labels again what matured then, with the
            outcomes known now; a label an earlier run wrote is only replaced by a computed one, never by NULL).
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
    problems = feed_problems(counts, max_no_outcome_share=settings.no_outcome_alert_share)
    if problems:
        send_alert(
            Alert(
                title="join_ground_truth: the outcome feed looks broken",
                text=(
                    f"as of {window.as_of.isoformat()}: " + "; ".join(problems) + ". Labels of the window"
                    f" ({window.window_start.isoformat()}, {window.as_of.isoformat()}] are held back: fix the"
                    " outcome feed, then re-run this interval (or a later one with relabel_days)."
                ),
                details={"as_of": window.as_of.isoformat(), **counts},
            ),
            webhook_url=webhook_url,
        )
        labeled = 0
    else:
        labeled = warehouse.execute(LABELS_MERGE, params)
    summary = GroundTruthSummary(
        as_of=window.as_of,
        window_start=window.window_start,
        early_maturity_days=window.early_maturity_days,
        maturity_days=window.maturity_days,
        **counts,
        labeled=labeled,
        held_back=bool(problems),
        alerts=tuple(problems),
    )
    if counts["denied_with_outcome"]:
        logger.warning(
            "%d denied decisions have outcomes: a denied applicant gets no credit; check the outcome producer's "
            "transaction ids",
            counts["denied_with_outcome"],
        )
    logger.info("join_ground_truth as of %s: %s", window.as_of.isoformat(), summary.as_dict())
    return summary
