"""Replay a simulated period through the running decision API: history on the real path.

Two passes, in simulated time:

1. **Decisions.** Every purchase of the window is sent to ``POST /v1/bnpl/risk-assessment`` in the order of its
   ``event_timestamp`` (the simulated purchase time, sent as the request's ``event_timestamp``). ``concurrency``
   workers take the next purchase in that order, so at most that many are in flight and the order is kept up to a
   small window; every event carries its own timestamp, so nothing downstream depends on arrival order.
2. **Outcomes.** Then every outcome of a purchase the API **approved** goes to ``POST /v1/outcomes:batch`` (500 a
   request, as a feed delivers in bulk) in the order it became known (its ``event_timestamp``), stating its simulated
   delivery (``delivered_at``: labels as of a simulated day use only the outcomes delivered by then). A denied
   purchase was never funded, so it has no outcome; a purchase sent to ``manual_review`` counts as not funded either
   (nobody reviews it in a replay), and neither does a purchase whose decision failed. Their outcome rows are skipped
   and counted.

The API takes any time-zone-aware ``event_timestamp``, past or future: it is the purchase's own time (features use
its time of day), while the service records when it saw the request (``served_at`` / ``received_at``).

Retries. A ``503`` is retried after its ``Retry-After`` (the API answers it before deciding or recording anything),
and so is a connection that could not be opened; both are safe to repeat. A request that was sent but got no
answer (read timeout, dropped connection) is retried too, and counted: the API has no idempotency for decisions
(each decision draws a fresh prediction id), so if the lost attempt was decided, the predictions stream holds that
purchase twice, under two prediction ids and one ``transaction_id``. ``ReplaySummary.unconfirmed_decision_attempts``
bounds how many such extra entries can exist. Outcomes are safe to repeat: their ids are derived from
(transaction, type, instalment), so a re-send adds nothing. A 4xx (or any other status) is never retried: it is
counted under its status with the first body seen; a 401 / 403 stops the pass (every later request would get it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import orjson

from shadowgate.contract import field_names

if TYPE_CHECKING:
    import pandas as pd

DECISION_PATH = "/v1/bnpl/risk-assessment"
OUTCOME_PATH = "/v1/outcomes"
OUTCOME_BATCH_PATH = "/v1/outcomes:batch"
OUTCOME_BATCH = 500
"""Outcomes per ``POST /v1/outcomes:batch`` request (a feed delivers in bulk; one request each would take minutes)."""
INGEST_KEY_HEADER = "X-Ingest-Key"
DECISIONS, OUTCOMES = "decisions", "outcomes"
"""The two passes (progress and error phases are named after them)."""

CONNECTION = "connection"
"""The status an error is counted under when no HTTP answer arrived."""

_JSON = {"content-type": "application/json"}
_CHUNK = 2_000  # rows encoded at a time: memory follows the chunk, not the period
_STOPPING_STATUSES = frozenset({401, 403})
_BODY_SHOWN = 500  # characters of an error body kept in the summary


class ReplayError(RuntimeError):
    """The replay cannot start: the API does not answer or is not ready, the ingest key is missing or refused, or the
    window holds no purchase."""


class ReplayProgress(Protocol):
    """Where progress goes (the CLI's progress bar); called from the worker threads."""

    def start(self, phase: str, total: int) -> None: ...

    def advance(self, phase: str, count: int = 1) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    """When a request is sent again."""

    max_attempts: int = 8
    """Attempts per request, the first included; past them the last failure is counted as the request's error."""
    backoff_s: float = 0.25
    """First wait after a connection error (doubled per attempt, with jitter) and after a 503 without Retry-After."""
    max_backoff_s: float = 10.0
    """Longest wait between two attempts of one request."""
    max_retry_after_s: float = 60.0
    """A longer ``Retry-After`` is cut to this."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based): exponential, half to full jitter."""
        ceiling = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        return ceiling * (0.5 + 0.5 * rng.random())


@dataclass(frozen=True)
class ErrorCount:
    """Requests of one pass that ended with one status (after any retries)."""

    phase: str
    """``decisions`` or ``outcomes``."""
    status: str
    """The HTTP status (``"422"``) or ``"connection"`` when no answer ever arrived."""
    count: int
    first_body: str
    """The first answer's body with this status (or the connection error), cut to 500 characters."""


@dataclass(frozen=True)
class DecisionPass:
    """What the decision pass did."""

    purchases: int
    answered: int
    by_decision: dict[str, int]
    """``approve`` / ``deny`` / ``manual_review`` → decisions answered."""
    fallback: int
    """Decisions taken by the rule-based fallback (no model could score)."""
    approved: frozenset[str]
    """Transaction ids the API approved: the purchases whose outcomes exist."""
    errors: tuple[ErrorCount, ...]
    retries: int
    unconfirmed_attempts: int
    stopped: str | None
    elapsed_s: float


@dataclass(frozen=True)
class OutcomePass:
    """What the outcome pass did."""

    rows: int
    """Outcome rows of the replayed purchases."""
    sent: int
    """Outcomes the API accepted (202)."""
    skipped: int
    """Rows of purchases the API did not approve (denied, manual review, or no decision answered): not sent."""
    errors: tuple[ErrorCount, ...]
    retries: int
    stopped: str | None
    elapsed_s: float


@dataclass(frozen=True)
class ReplaySummary:
    """What a replay did; ``ok`` when every request succeeded and no pass stopped early."""

    api_url: str
    window_start: dt.datetime
    window_end: dt.datetime
    """The purchases replayed are those with ``window_start <= event_timestamp < window_end``."""
    purchases: int
    decisions_answered: int
    approved: int
    denied: int
    manual_review: int
    fallback: int
    outcomes_enabled: bool
    outcome_rows: int
    """Outcome rows of the replayed purchases (0 when outcomes are not sent)."""
    outcomes_sent: int
    outcomes_skipped: int
    """Outcome rows of purchases the API did not approve (not funded, so never sent)."""
    errors: tuple[ErrorCount, ...]
    retries: int
    """Attempts repeated after a 503 or a connection error (both passes)."""
    unconfirmed_decision_attempts: int
    """Decision requests sent whose answer never arrived: each may have been decided and logged, so the predictions
    stream may hold up to this many entries beyond ``decisions_answered`` (duplicates of a ``transaction_id``)."""
    stopped: str | None
    """Why a pass stopped early (a 401 / 403, or an interrupt); None when both ran to the end."""
    decisions_elapsed_s: float
    outcomes_elapsed_s: float
    elapsed_s: float

    @property
    def error_count(self) -> int:
        return sum(e.count for e in self.errors)

    @property
    def ok(self) -> bool:
        return self.error_count == 0 and self.stopped is None

    @property
    def decisions_per_s(self) -> float:
        return self.decisions_answered / self.decisions_elapsed_s if self.decisions_elapsed_s > 0 else 0.0

    @property
    def outcomes_per_s(self) -> float:
        return self.outcomes_sent / self.outcomes_elapsed_s if self.outcomes_elapsed_s > 0 else 0.0

    def render(self) -> str:
        def pct(part: int) -> str:
            return f"{part / self.decisions_answered:.1%}" if self.decisions_answered else "-"

        lines = [
            f"replay of {_instant(self.window_start)} → {_instant(self.window_end)} through {self.api_url}",
            f"  decisions  {self.decisions_answered:,} answered of {self.purchases:,} purchases in "
            f"{self.decisions_elapsed_s:.1f} s ({self.decisions_per_s:,.0f}/s)",
            f"             approve {self.approved:,} ({pct(self.approved)})  deny {self.denied:,} "
            f"({pct(self.denied)})  manual_review {self.manual_review:,} ({pct(self.manual_review)})"
            + (f"  fallback {self.fallback:,}" if self.fallback else ""),
        ]
        if self.outcomes_enabled and self.stopped and self.stopped.startswith(DECISIONS):
            lines.append("  outcomes   not sent: the decision pass stopped")
        elif self.outcomes_enabled:
            lines.append(
                f"  outcomes   {self.outcomes_sent:,} sent of {self.outcome_rows:,} rows in "
                f"{self.outcomes_elapsed_s:.1f} s ({self.outcomes_per_s:,.0f}/s); {self.outcomes_skipped:,} skipped "
                "(purchase not approved: denied, manual review or not decided)"
            )
        else:
            lines.append("  outcomes   not sent (--no-outcomes)")
        lines.append(
            f"  retries    {self.retries:,}"
            + (
                f"; {self.unconfirmed_decision_attempts:,} decision attempt(s) unanswered (may be logged twice)"
                if self.unconfirmed_decision_attempts
                else ""
            )
        )
        if self.errors:
            lines.append(f"  errors     {self.error_count:,}")
            lines.extend(f"    {e.phase} {e.status}: {e.count:,}  first: {e.first_body}" for e in self.errors)
        else:
            lines.append("  errors     none")
        if self.stopped:
            lines.append(f"  stopped    {self.stopped}")
        lines.append(f"  elapsed    {self.elapsed_s:.1f} s")
        return "\n".join(lines)


def _instant(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------------------------------------ the period


def select_window(
    transactions: pd.DataFrame,
    outcomes: pd.DataFrame,
    *,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dt.datetime, dt.datetime]:
    """The purchases with ``start <= event_timestamp < end`` in time order, their outcome rows in the order they
    became known, and the window actually covered (the data's own bounds where ``start`` / ``end`` are None).

    Raises:
        ReplayError: the window is empty or inverted.
    """
    import pandas as pd

    times = pd.to_datetime(transactions["event_timestamp"], utc=True)
    lower = _utc(start) if start is not None else times.min()
    # Without an end, the next whole second after the last purchase: every purchase is inside.
    upper = _utc(end) if end is not None else times.max().floor("s") + pd.Timedelta(seconds=1)
    if start is not None and end is not None and lower >= upper:
        raise ReplayError(f"empty window: its start {_instant(lower)} is not before its end {_instant(upper)}")
    inside = (times >= lower) & (times < upper)
    if not inside.any():
        covered = f"{_instant(times.min())} → {_instant(times.max())}" if len(times) else "nothing"
        raise ReplayError(f"no purchase in [{_instant(lower)}, {_instant(upper)}): the data covers {covered}")
    chosen = transactions.loc[inside].assign(event_timestamp=times[inside])
    chosen = chosen.sort_values("event_timestamp", kind="stable", ignore_index=True)
    their = outcomes.loc[outcomes["transaction_id"].isin(chosen["transaction_id"])]
    their = their.assign(event_timestamp=pd.to_datetime(their["event_timestamp"], utc=True))
    their = their.sort_values(["event_timestamp", "transaction_id"], kind="stable", ignore_index=True)
    return chosen, their, lower.to_pydatetime(), upper.to_pydatetime()


def _utc(value: dt.datetime) -> pd.Timestamp:
    """An instant in UTC; a naive one is taken as UTC."""
    import pandas as pd

    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _rfc3339(times: pd.Series) -> list[str]:
    """UTC instants as RFC 3339 text (microseconds only when there are any)."""
    utc = times.dt.tz_convert("UTC")
    whole = bool((utc.dt.microsecond == 0).all())
    return utc.dt.strftime("%Y-%m-%dT%H:%M:%SZ" if whole else "%Y-%m-%dT%H:%M:%S.%fZ").tolist()


def decision_bodies(transactions: pd.DataFrame) -> Iterator[tuple[str, bytes]]:
    """``(transaction_id, request body)`` per purchase, in the frame's order: the contract's fields, nothing else."""
    names = list(field_names())
    for offset in range(0, len(transactions), _CHUNK):
        chunk = transactions.iloc[offset : offset + _CHUNK][names]
        chunk = chunk.assign(event_timestamp=_rfc3339(chunk["event_timestamp"]))
        for record in chunk.to_dict("records"):
            yield record["transaction_id"], orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY)


def outcome_bodies(outcomes: pd.DataFrame) -> Iterator[tuple[str, bytes]]:
    """``(transaction_id, request body)`` per simulated outcome row, in the frame's order.

    No ``Idempotency-Key``: (transaction, type, instalment) is unique in the simulator's log, so the API's own id is
    the same one any other producer of that outcome gets.

    Each body states the simulated delivery as ``delivered_at``: the frame's ``delivered_at`` column when it has one
    (a lagging feed, :func:`~shadowgate.simulation.world.jittered_feed`), else the signal's ``event_timestamp`` (the
    simulator's feed delivers a signal the instant it is known). Without it every outcome would arrive at the wall
    clock of the replay, and a label as of a simulated day would see none. A delivery still in the future of the
    wall clock is not stated (the API refuses a delivery later than its receipt): that outcome arrives when received.
    """
    import pandas as pd

    for offset in range(0, len(outcomes), _CHUNK):
        chunk = outcomes.iloc[offset : offset + _CHUNK]
        stamps = _rfc3339(chunk["event_timestamp"])
        delivered = chunk["delivered_at"] if "delivered_at" in chunk else chunk["event_timestamp"]
        now = pd.Timestamp.now(tz="UTC")
        past = (delivered <= now).tolist()
        deliveries = [d if ok else None for d, ok in zip(_rfc3339(delivered), past, strict=True)]
        columns = zip(
            chunk["transaction_id"].tolist(),
            chunk["event_type"].tolist(),
            stamps,
            chunk["instalment"].tolist(),
            chunk["amount"].tolist(),
            deliveries,
            strict=True,
        )
        for transaction_id, event_type, stamp, instalment, amount, delivered_at in columns:
            body = {
                "transaction_id": transaction_id,
                "event_type": event_type,
                "event_timestamp": stamp,
                "instalment_number": int(instalment),
                "amount": None if amount is None or math.isnan(amount) else float(amount),
            }
            if delivered_at is not None:
                body["delivered_at"] = delivered_at
            yield transaction_id, orjson.dumps(body)


def _batched(bodies: Iterator[tuple[str, bytes]], size: int) -> Iterator[tuple[str, bytes]]:
    """Outcome bodies grouped into ``POST /v1/outcomes:batch`` bodies: ``(rows in it, body)``, in order."""
    chunk: list[bytes] = []
    for _, body in bodies:
        chunk.append(body)
        if len(chunk) == size:
            yield str(len(chunk)), b'{"outcomes":[' + b",".join(chunk) + b"]}"
            chunk = []
    if chunk:
        yield str(len(chunk)), b'{"outcomes":[' + b",".join(chunk) + b"]}"


# ------------------------------------------------------------------------------------------------ sending


class _Pacer:
    """At most ``rate`` requests per second over all workers (None: as fast as they go)."""

    def __init__(self, rate: float | None, *, sleep: Callable[[float], None]) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive")
        self._interval = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._lock = threading.Lock()
        self._sleep = sleep

    def wait(self) -> None:
        if not self._interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now)
            self._next = slot + self._interval
        if slot > now:
            self._sleep(slot - now)


@dataclass(frozen=True)
class _Answer:
    status: int | None
    """The final HTTP status; None when no answer arrived."""
    body: str
    data: Any
    """The parsed JSON body of a 2xx answer (None otherwise)."""


@dataclass
class _Tally:
    """What one pass has seen so far (guarded by ``lock``; workers update it)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    ok: int = 0
    retries: int = 0
    unconfirmed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    first_body: dict[str, str] = field(default_factory=dict)
    stopped: str | None = None

    def failed(self, answer: _Answer) -> str:
        status = CONNECTION if answer.status is None else str(answer.status)
        with self.lock:
            self.errors[status] += 1
            self.first_body.setdefault(status, answer.body[:_BODY_SHOWN])
        return status

    def error_counts(self, phase: str) -> tuple[ErrorCount, ...]:
        return tuple(
            ErrorCount(phase=phase, status=status, count=count, first_body=self.first_body[status])
            for status, count in sorted(self.errors.items())
        )


def _retry_after(value: str | None, policy: RetryPolicy) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), capped; None when absent or bad."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - dt.datetime.now(dt.UTC)).total_seconds()
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), policy.max_retry_after_s)


class Replayer:
    """Sends decisions and outcomes to one API with ``concurrency`` keep-alive connections (one per worker thread).

    Args:
        api_url: base URL of the decision API (``http://127.0.0.1:8000``).
        ingest_key: the API's ingest key (``X-Ingest-Key``), needed for outcomes only.
        concurrency: worker threads, each with its own keep-alive connection.
        rate: at most this many requests per second over all workers (retries included); None: no limit.
        timeout_s: connect / read timeout of one attempt.
        retry: when a request is sent again.
        transport: an httpx transport in place of the network (tests).
        progress: told about each pass and each request done.
        sleep: how waits are done (tests record them instead).
        outcome_batch: outcomes per ``POST /v1/outcomes:batch`` request.
    """

    def __init__(
        self,
        *,
        api_url: str,
        ingest_key: str | None = None,
        concurrency: int = 8,
        rate: float | None = None,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        progress: ReplayProgress | None = None,
        sleep: Callable[[float], None] = time.sleep,
        outcome_batch: int = OUTCOME_BATCH,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.api_url = api_url.rstrip("/")
        self.ingest_key = ingest_key
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.transport = transport
        self.progress = progress
        self._sleep = sleep
        self.outcome_batch = outcome_batch
        self._pacer = _Pacer(rate, sleep=sleep)
        self._rng = random.Random()
        self._rng_lock = threading.Lock()

    def _client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.api_url,
            transport=self.transport,
            timeout=self.timeout_s,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )

    # -------------------------------------------------------------------------------------------- preflight

    def preflight(self, *, outcomes: bool) -> None:
        """Check before sending anything: the API answers and is ready; with outcomes, it accepts the ingest key.

        The key is probed with an empty outcome: the API checks the key before the body, so a refused key answers
        401 and an accepted one 422 — nothing is recorded either way.

        Raises:
            ReplayError: with what is wrong and what to do.
        """
        if outcomes and not self.ingest_key:
            raise ReplayError(
                "no ingest key for POST /v1/outcomes: pass --ingest-key, set SHADOWGATE_API_INGEST_KEY, or run "
                "`make up` (it writes <SHADOWGATE_HOME>/secrets/ingest_key); or replay with --no-outcomes"
            )
        with self._client() as client:
            try:
                ready = client.get("/health/ready")
            except httpx.TransportError as error:
                raise ReplayError(
                    f"the API at {self.api_url} does not answer ({type(error).__name__}: {error}); start the local "
                    "stack with `make up`, or pass --api-url"
                ) from None
            if ready.status_code != 200:
                raise ReplayError(
                    f"the API at {self.api_url} is not ready (GET /health/ready: {ready.status_code} "
                    f"{ready.text[:_BODY_SHOWN]}): decisions would come from the fallback rules, not the champion"
                )
            if not outcomes:
                return
            probe = client.post(OUTCOME_PATH, content=b"{}", headers={**_JSON, INGEST_KEY_HEADER: str(self.ingest_key)})
            if probe.status_code in _STOPPING_STATUSES:
                raise ReplayError(
                    f"the API refused the ingest key ({probe.status_code} on POST {OUTCOME_PATH}: "
                    f"{probe.text[:_BODY_SHOWN]}); pass the key the API was started with (--ingest-key or "
                    "SHADOWGATE_API_INGEST_KEY), or replay with --no-outcomes"
                )
            if probe.status_code != 422:
                raise ReplayError(
                    f"unexpected answer to the ingest-key probe (POST {OUTCOME_PATH} with an empty outcome): "
                    f"{probe.status_code} {probe.text[:_BODY_SHOWN]}"
                )

    # -------------------------------------------------------------------------------------------- passes

    def send_decisions(self, transactions: pd.DataFrame) -> DecisionPass:
        """One decision request per purchase, dispatched in the frame's order (sort it by ``event_timestamp``)."""
        tally = _Tally()
        decisions: Counter[str] = Counter()
        approved: set[str] = set()
        fallback = 0

        def handle(client: httpx.Client, transaction_id: str, body: bytes) -> None:
            nonlocal fallback
            answer = self._send(client, DECISION_PATH, body, headers=_JSON, tally=tally, ambiguous_counts=True)
            if answer.status != 200 or not isinstance(answer.data, dict) or "decision" not in answer.data:
                self._failed(tally, answer, DECISIONS)
                return
            decision = answer.data["decision"]
            with tally.lock:
                tally.ok += 1
                decisions[decision] += 1
                fallback += bool(answer.data.get("fallback"))
                if decision == "approve":
                    approved.add(transaction_id)

        elapsed = self._run(DECISIONS, len(transactions), decision_bodies(transactions), handle, tally)
        return DecisionPass(
            purchases=len(transactions),
            answered=tally.ok,
            by_decision=dict(decisions),
            fallback=fallback,
            approved=frozenset(approved),
            errors=tally.error_counts(DECISIONS),
            retries=tally.retries,
            unconfirmed_attempts=tally.unconfirmed,
            stopped=tally.stopped,
            elapsed_s=elapsed,
        )

    def send_outcomes(self, outcomes: pd.DataFrame, *, approved: Collection[str]) -> OutcomePass:
        """The outcome rows of approved purchases, dispatched in the frame's order (sort it by ``event_timestamp``).

        Raises:
            ReplayError: no ingest key.
        """
        if not self.ingest_key:
            raise ReplayError("no ingest key: outcomes cannot be sent")
        funded = outcomes.loc[outcomes["transaction_id"].isin(approved)]
        headers = {**_JSON, INGEST_KEY_HEADER: self.ingest_key}
        tally = _Tally()

        def handle(client: httpx.Client, count: str, body: bytes) -> int:
            answer = self._send(client, OUTCOME_BATCH_PATH, body, headers=headers, tally=tally, ambiguous_counts=False)
            if answer.status != 202:
                self._failed(tally, answer, OUTCOMES)  # one request: its outcomes are counted as one failure
                return int(count)
            with tally.lock:
                tally.ok += int(count)
            return int(count)

        elapsed = self._run(OUTCOMES, len(funded), _batched(outcome_bodies(funded), self.outcome_batch), handle, tally)
        return OutcomePass(
            rows=len(outcomes),
            sent=tally.ok,
            skipped=len(outcomes) - len(funded),
            errors=tally.error_counts(OUTCOMES),
            retries=tally.retries,
            stopped=tally.stopped,
            elapsed_s=elapsed,
        )

    def _failed(self, tally: _Tally, answer: _Answer, phase: str) -> None:
        status = tally.failed(answer)
        if answer.status in _STOPPING_STATUSES:
            with tally.lock:
                if tally.stopped is None:
                    tally.stopped = f"{phase}: {status} {answer.body[:_BODY_SHOWN]} (every later request would fail)"

    def _run(
        self,
        phase: str,
        total: int,
        items: Iterator[tuple[str, bytes]],
        handle: Callable[[httpx.Client, str, bytes], int | None],
        tally: _Tally,
    ) -> float:
        """Run ``handle`` over ``items`` on the workers, in order; the pass's wall time in seconds. ``handle`` returns
        how many rows the item carried (None: one)."""
        if self.progress is not None:
            self.progress.start(phase, total)
        started = time.perf_counter()
        take = threading.Lock()
        crashed: list[BaseException] = []

        def work() -> None:
            try:
                with self._client() as client:
                    while tally.stopped is None:
                        with take:
                            item = next(items, None)
                        if item is None:
                            return
                        rows = handle(client, *item)
                        if self.progress is not None:
                            self.progress.advance(phase, 1 if rows is None else rows)
            except BaseException as error:
                # A worker that died must not end the pass as if it were done: stop the others, raise it below.
                with tally.lock:
                    crashed.append(error)
                    tally.stopped = f"{phase}: {type(error).__name__}: {error}"

        workers = [
            threading.Thread(target=work, name=f"replay-{phase}-{i}", daemon=True) for i in range(self.concurrency)
        ]
        for worker in workers:
            worker.start()
        try:
            for worker in workers:
                while worker.is_alive():
                    worker.join(0.2)
        except KeyboardInterrupt:
            with tally.lock:
                tally.stopped = f"{phase}: interrupted"
            for worker in workers:
                worker.join()
        if crashed:
            raise crashed[0]
        return time.perf_counter() - started

    def _send(
        self,
        client: httpx.Client,
        path: str,
        body: bytes,
        *,
        headers: dict[str, str],
        tally: _Tally,
        ambiguous_counts: bool,
    ) -> _Answer:
        """POST with retries: 503 after its Retry-After, connection errors after a backoff; anything else returned."""
        retries = unconfirmed = 0
        try:
            for attempt in range(1, self.retry.max_attempts + 1):
                self._pacer.wait()
                wait: float | None = None
                try:
                    response = client.post(path, content=body, headers=headers)
                except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
                    # Nothing reached the API: safe to send again.
                    answer = _Answer(None, f"{type(error).__name__}: {error}", None)
                except httpx.TransportError as error:
                    # Sent, but no answer came back: the API may have acted on it.
                    unconfirmed += 1
                    answer = _Answer(None, f"{type(error).__name__}: {error}", None)
                else:
                    if response.status_code != 503:
                        data = None
                        if response.status_code < 300:
                            with contextlib.suppress(ValueError):
                                data = response.json()
                        return _Answer(response.status_code, response.text, data)
                    answer = _Answer(503, response.text, None)
                    wait = _retry_after(response.headers.get("Retry-After"), self.retry)
                if attempt == self.retry.max_attempts or tally.stopped is not None:
                    break
                if wait is None:
                    with self._rng_lock:
                        wait = self.retry.backoff(attempt, self._rng)
                retries += 1
                self._sleep(wait)
            return answer
        finally:
            with tally.lock:
                tally.retries += retries
                tally.unconfirmed += unconfirmed if ambiguous_counts else 0


def replay(
    *,
    transactions: pd.DataFrame,
    outcomes: pd.DataFrame,
    replayer: Replayer,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    send_outcomes: bool = True,
) -> ReplaySummary:
    """Send the purchases of ``[start, end)`` to the API, then the outcomes of those it approved.

    Args:
        transactions: the simulator's ``transactions`` table (contract columns).
        outcomes: the simulator's ``outcomes`` table; only rows of replayed purchases are considered.
        replayer: the client (API URL, ingest key, concurrency, rate, retries).
        start: first purchase instant replayed (None: the data's first).
        end: purchases from this instant on are not replayed (None: none left out).
        send_outcomes: False: decisions only.

    Raises:
        ReplayError: nothing to replay, or the API is unreachable, not ready or refuses the ingest key (checked
            before the first decision is sent).
    """
    chosen, their, lower, upper = select_window(transactions, outcomes, start=start, end=end)
    replayer.preflight(outcomes=send_outcomes)
    started = time.perf_counter()
    decisions = replayer.send_decisions(chosen)
    sent: OutcomePass | None = None
    if send_outcomes and decisions.stopped is None:
        sent = replayer.send_outcomes(their, approved=decisions.approved)
    return ReplaySummary(
        api_url=replayer.api_url,
        window_start=lower,
        window_end=upper,
        purchases=decisions.purchases,
        decisions_answered=decisions.answered,
        approved=decisions.by_decision.get("approve", 0),
        denied=decisions.by_decision.get("deny", 0),
        manual_review=decisions.by_decision.get("manual_review", 0),
        fallback=decisions.fallback,
        outcomes_enabled=send_outcomes,
        outcome_rows=sent.rows if sent else 0,
        outcomes_sent=sent.sent if sent else 0,
        outcomes_skipped=sent.skipped if sent else 0,
        errors=decisions.errors + (sent.errors if sent else ()),
        retries=decisions.retries + (sent.retries if sent else 0),
        unconfirmed_decision_attempts=decisions.unconfirmed_attempts,
        stopped=decisions.stopped or (sent.stopped if sent else None),
        decisions_elapsed_s=decisions.elapsed_s,
        outcomes_elapsed_s=sent.elapsed_s if sent else 0.0,
        elapsed_s=time.perf_counter() - started,
    )
