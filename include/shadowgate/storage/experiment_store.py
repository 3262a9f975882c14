"""The experiment book in Redis, shared by every API replica, and each replica's in-memory copy of it.

Redis holds one hash ``<prefix>:book`` (``version``, the book as JSON, the id of the change that made it and of that
change's audit entry) and the audit stream ``<prefix>:audit``: one entry per change, the seed included. A change
is planned on the book as read (:func:`~shadowgate.decisioning.experiments.plan_transition` …) and committed by a Lua
script only if the book is still at the version read — a compare-and-set on the version, so two replicas changing the
book at once cannot lose each other's change. The book and its audit entry are written together or not at all. A change
that lost the race is planned again on the fresh book (one that is no longer legal then fails with the lifecycle's
error).

:class:`LiveExperiments` is what a replica serves from: requests read its in-memory book (an attribute, no I/O); a
background thread checks the id of the last change in Redis every ``poll_interval_s`` and adopts a new book; a change
made through this replica is adopted as soon as it is committed. When Redis cannot be reached the replica keeps
serving the book it has. Every book it adopts is also written to a file on local disk, so a replica that starts while
Redis is down serves its last book (else the shipped ``experiments.yaml``). When Redis has no book, the first replica
to notice seeds it with the book it serves (the shipped YAML on a first start; its last book when Redis lost its
data) — exactly once, whichever replicas race.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.backoff import NoBackoff
from redis.retry import Retry

from shadowgate.decisioning.experiments import (
    AuditRecord,
    BookChange,
    ConfigError,
    Experiment,
    ExperimentBook,
    ExperimentStatus,
    book_from_json,
    book_to_json,
    load_book,
    plan_add,
    plan_share,
    plan_transition,
    seed_record,
)

logger = logging.getLogger(__name__)

DEFAULT_KEY_PREFIX = "shadowgate:experiments"

Plan = Callable[[ExperimentBook], BookChange]


class ExperimentStoreUnavailableError(RuntimeError):
    """Redis did not answer (or holds no valid book): the change was not made."""


class ExperimentBookConflictError(RuntimeError):
    """Other changes kept landing between reading the book and committing this one; nothing was written."""


# KEYS: the book hash, the audit stream. ARGV: expected version, new version, book JSON, change id, then the audit
# entry's field/value pairs.
_COMMIT = """
local current = redis.call('HGET', KEYS[1], 'version')
if not current then return {'missing', ''} end
if current ~= ARGV[1] then
  if redis.call('HGET', KEYS[1], 'change_id') == ARGV[4] then
    return {'applied', redis.call('HGET', KEYS[1], 'audit_id')}
  end
  return {'conflict', current}
end
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 5))
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'book', ARGV[3], 'change_id', ARGV[4], 'audit_id', id)
return {'ok', id}
"""

# KEYS: the book hash, the audit stream. ARGV: version, book JSON, change id, then the audit entry's field/value pairs.
_SEED = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4))
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'book', ARGV[2], 'change_id', ARGV[3], 'audit_id', id)
return id
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _audit_fields(record: AuditRecord) -> list[str]:
    # Every value JSON-encoded, so that reading an entry back needs no per-field knowledge.
    return [part for name, value in record.as_dict().items() for part in (name, json.dumps(value, sort_keys=True))]


class StoredBook(NamedTuple):
    """The book in Redis and the id of the change that made it."""

    book: ExperimentBook
    change_id: str


class ExperimentStore:
    """The experiment book and its audit stream in Redis.

    Args:
        client: a Redis client (with socket timeouts: a replica must not hang on an unreachable Redis).
        key_prefix: the book is ``<prefix>:book`` (a hash), the audit stream ``<prefix>:audit``.
        commit_attempts: how often a change is planned again on the fresh book after losing a race.
    """

    def __init__(self, client: redis.Redis, *, key_prefix: str = DEFAULT_KEY_PREFIX, commit_attempts: int = 5) -> None:
        if commit_attempts < 1:
            raise ValueError("commit_attempts must be at least 1")
        self.client = client
        self.book_key = f"{key_prefix}:book"
        self.audit_key = f"{key_prefix}:audit"
        self.commit_attempts = commit_attempts
        self._commit_script = client.register_script(_COMMIT)
        self._seed_script = client.register_script(_SEED)

    @property
    def source(self) -> str:
        """Where the book lives, for error messages."""
        return f"redis key {self.book_key}"

    def _call(self, command: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except redis.RedisError as error:
            raise ExperimentStoreUnavailableError(
                f"experiment book in Redis unavailable: {type(error).__name__}: {error}"
            ) from error

    def last_change_id(self) -> str | None:
        """The id of the change that made the book in Redis (one HGET: what replicas poll; every change and seed
        makes a new one); None when Redis holds no book.

        Raises:
            ExperimentStoreUnavailableError: Redis did not answer.
        """
        raw = self._call(self.client.hget, self.book_key, "change_id")
        return None if raw is None else _text(raw)

    def load(self) -> StoredBook | None:
        """The book in Redis with the id of the change that made it; None when there is none.

        Raises:
            ExperimentStoreUnavailableError: Redis did not answer.
            ConfigError: the stored book does not parse or validate.
        """
        text, change_id = self._call(self.client.hmget, self.book_key, ["book", "change_id"])
        if text is None:
            return None
        return StoredBook(book_from_json(text, source=self.source), _text(change_id))

    def seed(self, book: ExperimentBook, *, actor: str, reason: str, at: dt.datetime | None = None) -> bool:
        """Create the book in Redis unless one exists (atomically: of replicas racing, exactly one seeds).

        Returns True when this call created it (and wrote the ``seed`` audit entry), False when a book was there.

        Raises:
            ExperimentStoreUnavailableError: Redis did not answer.
        """
        record = seed_record(book, actor=actor, reason=reason, at=at or _now())
        args = [book.version, book_to_json(book), record.change_id, *_audit_fields(record)]
        created = self._call(self._seed_script, keys=[self.book_key, self.audit_key], args=args)
        return created is not None

    def commit(self, plan: Plan) -> BookChange:
        """Read the book, plan the change on it and write it only if the book has not moved meanwhile; when it has,
        plan again on the fresh book (up to ``commit_attempts`` times).

        Raises:
            ExperimentStoreUnavailableError: Redis did not answer, or holds no book (not seeded yet) or an invalid one.
            ExperimentBookConflictError: every attempt lost the race; nothing was written.
            ExperimentNotFoundError, IllegalTransitionError, ValueError: from ``plan`` (nothing was written).
        """
        for attempt in range(1, self.commit_attempts + 1):
            version, text = self._call(self.client.hmget, self.book_key, ["version", "book"])
            if version is None or text is None:
                raise ExperimentStoreUnavailableError(f"no experiment book in Redis ({self.book_key}): not seeded")
            try:
                book = book_from_json(text, source=self.source)
            except ConfigError as error:
                raise ExperimentStoreUnavailableError(f"the experiment book in Redis is invalid: {error}") from error
            change = plan(book)
            status, value = self._send(change, expected=int(version))
            if status in ("ok", "applied"):
                return change
            if status == "missing":
                raise ExperimentStoreUnavailableError(f"the experiment book ({self.book_key}) vanished from Redis")
            logger.info(
                "experiment book moved from version %s to %s during a change (attempt %d of %d); planning it again",
                version,
                value,
                attempt,
                self.commit_attempts,
            )
        raise ExperimentBookConflictError(
            f"the experiment book kept changing during this change ({self.commit_attempts} attempts); "
            "nothing was written: read the book and try again"
        )

    def _send(self, change: BookChange, *, expected: int) -> tuple[str, str]:
        keys = [self.book_key, self.audit_key]
        args: list[str | int] = [expected, change.book.version, book_to_json(change.book), change.record.change_id]
        args += _audit_fields(change.record)
        try:
            reply = self._commit_script(keys=keys, args=args)
        except (redis.ConnectionError, redis.TimeoutError):
            # The script may have run and only its reply been lost: sent again, the change id says "applied" then
            # instead of planning the change a second time on top of itself.
            reply = self._call(self._commit_script, keys=keys, args=args)
        return _text(reply[0]), _text(reply[1])

    def audit(self) -> list[dict[str, Any]]:
        """Every audit entry, oldest first: the :class:`AuditRecord` fields plus ``audit_id`` (the stream entry id).

        Raises:
            ExperimentStoreUnavailableError: Redis did not answer.
        """
        entries = self._call(self.client.xrange, self.audit_key)
        return [
            {"audit_id": _text(entry_id), **{_text(k): json.loads(v) for k, v in fields.items()}}
            for entry_id, fields in entries
        ]


# --------------------------------------------------------------------------------------------- the local copy


def read_cached_book(path: Path) -> ExperimentBook | None:
    """The book a replica last adopted, from its disk cache; None when there is none or it is unusable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        logger.warning("experiment book cache %s unreadable (%s); ignored", path, error)
        return None
    try:
        return book_from_json(text, source=str(path))
    except ConfigError as error:
        logger.warning("%s; ignored", error)
        return None


def write_cached_book(path: Path, book: ExperimentBook) -> None:
    """Write the book atomically (temporary file, fsync, rename): a crash leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(book_to_json(book) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class BookStatus:
    """Which book a replica serves and how it follows Redis (for /health/ready, /v1/experiments and metrics)."""

    book_version: int
    source: str
    """``redis`` (the book followed), ``cache`` (the last book this replica had, Redis not reached yet) or
    ``shipped`` (the packaged YAML: no Redis and no cache at start)."""
    redis_up: bool | None
    """Whether the last check of Redis succeeded (None before the first)."""
    last_sync_at: str | None
    """When Redis last answered a check (ISO 8601, UTC)."""
    sync_failures: int
    last_error: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class LiveExperiments:
    """The book a replica serves: in memory for requests, following the book in Redis.

    Args:
        store: the book in Redis.
        cache_path: the file holding the last book this replica adopted.
        poll_interval_s: seconds between checks of the version in Redis.
        shipped: the YAML to start from when there is neither Redis nor a cache; default the packaged one.
    """

    def __init__(
        self, *, store: ExperimentStore, cache_path: Path, poll_interval_s: float = 1.0, shipped: Path | None = None
    ) -> None:
        self.store = store
        self.cache_path = cache_path
        self.poll_interval_s = poll_interval_s
        self._shipped_name = str(shipped) if shipped else "the shipped experiments.yaml"
        cached = read_cached_book(cache_path)
        self._cached = cached
        self._book, self._source = (cached, "cache") if cached is not None else (load_book(shipped), "shipped")
        self._change_id: str | None = None  # of the book served, once it came from Redis
        self._lock = threading.Lock()  # one sync or change at a time; readers of the book never lock
        self._redis_up: bool | None = None
        self._last_sync: float | None = None
        self._failures = 0
        self._last_error: str | None = None
        self._identity = f"replica {socket.gethostname()} pid {os.getpid()}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def book(self) -> ExperimentBook:
        """The book to serve (one attribute read: no I/O, no lock; safe from any thread)."""
        return self._book

    def status(self) -> BookStatus:
        last = self._last_sync
        return BookStatus(
            book_version=self._book.version,
            source=self._source,
            redis_up=self._redis_up,
            last_sync_at=dt.datetime.fromtimestamp(last, dt.UTC).isoformat() if last is not None else None,
            sync_failures=self._failures,
            last_error=self._last_error,
        )

    def sync_age_s(self) -> float | None:
        """Seconds since Redis last answered a check (None if it never did)."""
        return None if self._last_sync is None else max(0.0, time.time() - self._last_sync)

    # ------------------------------------------------------------------------------------------------ following

    def start(self) -> None:
        """Sync once (synchronously; Redis down → keep the book from the cache or the YAML), then poll."""
        self.refresh()
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._poll, name="experiment-book-poller", daemon=True)
            self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop following (the book served stays readable) and close the Redis connections."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self.store.client.close()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            try:
                self.refresh()
            except Exception:  # the poller must outlive any surprise; the next check tries again
                logger.exception("experiment book check failed")

    def refresh(self) -> bool:
        """Check Redis once: adopt its book when it differs, seed it when it has none. Returns True when the book
        served changed. Never raises for Redis being down or holding an invalid book: the book served stays."""
        with self._lock:
            try:
                return self._sync()
            except ExperimentStoreUnavailableError as error:
                self._failed(str(error), down=True)
            except ConfigError as error:
                self._failed(f"the experiment book in Redis is invalid, keeping version {self._book.version}: {error}")
            return False

    def _sync(self) -> bool:
        change_id = self.store.last_change_id()
        if change_id is None:
            self._seed()
        elif change_id == self._change_id:
            self._ok()
            return False
        stored = self.store.load()
        if stored is None:  # deleted between the two reads: the next check seeds it again
            self._ok()
            return False
        return self._adopt(stored)

    def _seed(self) -> None:
        if self._source == "shipped":
            reason = f"no experiment book in Redis: seeded from {self._shipped_name}"
        else:
            reason = (
                f"no experiment book in Redis: restored from this replica's last book "
                f"(version {self._book.version}, from {self._source})"
            )
        if self.store.seed(self._book, actor=self._identity, reason=reason):
            logger.warning("%s", reason)

    def _adopt(self, stored: StoredBook) -> bool:
        book = stored.book
        changed = book != self._book
        if book.version < self._book.version:
            # Redis was restored from an older copy: it is the one book all replicas share, so it wins.
            logger.warning(
                "experiment book in Redis (version %d) is older than ours (%d)", book.version, self._book.version
            )
        self._book = book
        self._change_id = stored.change_id
        self._source = "redis"
        self._ok()
        if book != self._cached:
            try:
                write_cached_book(self.cache_path, book)
                self._cached = book
            except OSError:  # a full disk costs only the fallback for a later outage, not serving
                logger.exception("could not cache the experiment book in %s", self.cache_path)
        if changed:
            logger.info("serving experiment book version %d", book.version)
        return changed

    def _ok(self) -> None:
        if self._redis_up is False:
            logger.warning("experiment book: Redis answers again; following it (book version %d)", self._book.version)
        self._redis_up = True
        self._last_sync = time.time()
        self._last_error = None

    def _failed(self, message: str, *, down: bool = False) -> None:
        self._failures += 1
        self._last_error = message[:500]
        if down:
            if self._redis_up is not False:  # once per outage, not every second
                logger.warning(
                    "%s; serving book version %d (%s) until it answers", message, self._book.version, self._source
                )
            self._redis_up = False
        else:
            logger.error("%s", message)

    # ------------------------------------------------------------------------------------------------ changing

    def transition(self, experiment_id: str, to: ExperimentStatus | str, *, actor: str, reason: str) -> Experiment:
        """Move one experiment through its lifecycle, in Redis (audited); this replica serves the result at once."""
        at = _now()
        return self._change(lambda book: plan_transition(book, experiment_id, to=to, actor=actor, reason=reason, at=at))

    def set_share(self, experiment_id: str, share: float, *, actor: str, reason: str) -> Experiment:
        """Change one experiment's treatment share, in Redis (audited; a lowered share is flagged)."""
        at = _now()
        return self._change(
            lambda book: plan_share(book, experiment_id, share=share, actor=actor, reason=reason, at=at)
        )

    def add(self, experiment: Experiment, *, actor: str, reason: str) -> Experiment:
        """Add a new draft experiment, in Redis (audited)."""
        at = _now()
        return self._change(lambda book: plan_add(book, experiment, actor=actor, reason=reason, at=at))

    def _change(self, plan: Plan) -> Experiment:
        with self._lock:
            try:
                self._sync()  # seeds Redis if it lost its book since the last check
                change = self.store.commit(plan)
            except ExperimentStoreUnavailableError as error:
                self._failed(str(error), down=True)
                raise
            except ConfigError as error:
                self._failed(str(error))
                raise ExperimentStoreUnavailableError(f"the experiment book in Redis is invalid: {error}") from error
            self._adopt(StoredBook(change.book, change.record.change_id))
        record = change.record
        logger.info(
            "experiment %s: %s by %s (%s); book version %d",
            record.experiment_id,
            record.change,
            record.actor,
            record.reason,
            record.to_version,
        )
        return change.experiment


class ExperimentBookCollector(Collector):
    """Prometheus metrics of the book a replica serves and how it follows Redis."""

    def __init__(self, live: LiveExperiments) -> None:
        self._live = live

    def collect(self) -> Iterator[Any]:
        status = self._live.status()
        age = self._live.sync_age_s()
        age = math.nan if age is None else age
        for name, doc, value in (
            ("version", "Version of the experiment book this replica serves.", float(status.book_version)),
            ("redis_up", "1 when the last check of the book in Redis succeeded.", 1.0 if status.redis_up else 0.0),
            ("sync_age_seconds", "Seconds since Redis last answered a book check (NaN: never).", age),
        ):
            gauge = GaugeMetricFamily(f"shadowgate_experiment_book_{name}", doc)
            gauge.add_metric([], value)
            yield gauge
        failures = CounterMetricFamily(
            "shadowgate_experiment_book_sync_failures", "Checks or changes of the book in Redis that failed."
        )
        failures.add_metric([], float(status.sync_failures))
        yield failures


def redis_client(url: str, *, timeout_s: float) -> redis.Redis:
    """A client for the book: short socket timeouts and no retry loop inside redis-py, so that a replica whose Redis
    is unreachable learns it within ``timeout_s`` and keeps serving its book (the poller tries again)."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
