"""Events into Redis Streams together with the journal position they came from, in one atomic script.

The shadow process turns a batch of journal records into stream entries and calls :meth:`Committer.commit` with the
position the batch ends at. One Lua script checks that Redis still holds the position the batch starts from (else
another shadow process got there first: nothing is written), XADDs every entry and stores the new position — all or
nothing, so a batch is in Redis exactly once however often the process dies and re-reads it.

The de-duplication state is therefore one key per journal, not one per event. Only outcomes keep a per-event marker,
for a client that sends the same outcome twice (same deterministic id): it lives ``outcome_dedup_ttl_s`` (an hour by
default), so Redis holds at most an hour of outcome ids; a re-send after that adds a second stream entry, which the
warehouse MERGE on ``outcome_id`` still loads once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

import redis
import redis.exceptions as rex
from redis.backoff import NoBackoff
from redis.retry import Retry

from shadowgate.serving.journal import Position

logger = logging.getLogger(__name__)

# KEYS: the position key, then per record its stream and its dedup key. ARGV: expected position ('' = none yet), new
# position (followed by '@' and the writer's epoch; only the part before '@' is compared), dedup ttl, then per record:
# use the dedup key (0/1), field count, fields. Every stream's type is checked before anything is written: a script
# that fails half-way is not rolled back. No XADD MAXLEN: streams are trimmed only below what every consumer group
# has consumed (storage.redis_streams.trim_consumed).
_COMMIT_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[2] and string.find(ARGV[2], '@', 1, true) then
  return {-3, current}
end
local at = string.find(current or '', '@', 1, true)
local held = at and string.sub(current, 1, at - 1) or (current or '')
if held ~= ARGV[1] then
  return {-2, current or ''}
end
local n = (#KEYS - 1) / 2
local out = {1}
for i = 1, n do
  local kind = redis.call('TYPE', KEYS[2 * i])['ok']
  if kind ~= 'stream' and kind ~= 'none' then
    out[i + 1] = -1
  end
end
local ttl = ARGV[3]
local pos = 4
for i = 1, n do
  local stream, dedup = KEYS[2 * i], KEYS[2 * i + 1]
  local use_dedup = ARGV[pos] == '1'
  local count = tonumber(ARGV[pos + 1])
  if out[i + 1] == nil then
    if use_dedup and redis.call('EXISTS', dedup) == 1 then
      out[i + 1] = 0
    else
      local args = {stream, '*'}
      for j = pos + 2, pos + 1 + 2 * count do
        args[#args + 1] = ARGV[j]
      end
      redis.call('XADD', unpack(args))
      if use_dedup then
        redis.call('SET', dedup, '1', 'EX', ttl)
      end
      out[i + 1] = 1
    end
  end
  pos = pos + 2 + 2 * count
end
redis.call('SET', KEYS[1], ARGV[2])
return out
"""

_WRITTEN, _DUPLICATE, _WRONG_TYPE, _CONFLICT, _ALREADY = 1, 0, -1, -2, -3

# Errors after which the same batch may well succeed later: keep it and retry.
_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    rex.ConnectionError,  # includes BusyLoadingError (AOF still loading) and AuthenticationError
    rex.TimeoutError,
    rex.ReadOnlyError,
    rex.OutOfMemoryError,
    rex.TryAgainError,
    rex.MasterDownError,
    OSError,
)
_TRANSIENT_PREFIXES = ("MISCONF", "LOADING", "TRYAGAIN", "MASTERDOWN", "NOREPLICAS", "CLUSTERDOWN", "BUSY", "OOM")


def is_transient(error: BaseException) -> bool:
    """Whether Redis may accept the same write later (down, loading, out of memory, read-only replica, …)."""
    if isinstance(error, _TRANSIENT_TYPES):
        return True
    message = str(error)
    return message.startswith(_TRANSIENT_PREFIXES) or any(f" {p} " in message for p in ("OOM", "MISCONF"))


class StreamRecord(NamedTuple):
    """One stream entry to write: its stream, its fields, and its event id when it is de-duplicated by id."""

    stream: str
    fields: dict[str, str]
    dedup_id: str | None = None


class CommitOutcome(StrEnum):
    COMMITTED = "committed"
    ALREADY = "already"
    """Redis already holds exactly this batch's end from this writer: an earlier try of the same batch ran, and its
    reply was lost with the connection (Redis killed right after). Nothing was written again."""
    CONFLICT = "conflict"
    """Redis holds another position than the batch starts from: another process committed; re-read from Redis."""


@dataclass(frozen=True)
class CommitResult:
    outcome: CommitOutcome
    written: int = 0
    duplicates: int = 0
    refused: tuple[int, ...] = ()
    """Positions in the batch of records whose stream key holds another type (dead-letter them)."""
    current: Position | None = None
    """On a conflict: the position Redis holds."""


class Committer:
    """The shadow process's Redis writer for one journal.

    Args:
        redis_url: the Redis holding the streams.
        journal_id: names this journal's position key.
        key_prefix: prefix of the position and dedup keys.
        outcome_dedup_ttl_s: lifetime of an outcome's dedup marker.
        socket_timeout_s: bounds how long one commit can hang.
        writer_epoch: the journal writer whose records this process commits; stored with every position, so that a
            shadow process can tell a position its own writer's records reached from one another writer left.
    """

    def __init__(
        self,
        *,
        redis_url: str,
        journal_id: str,
        key_prefix: str = "shadowgate:",
        outcome_dedup_ttl_s: int = 3600,
        socket_timeout_s: float = 2.0,
        writer_epoch: str | None = None,
    ) -> None:
        self.writer_epoch = writer_epoch
        if outcome_dedup_ttl_s < 1:
            raise ValueError("outcome_dedup_ttl_s must be >= 1")
        self.position_key = f"{key_prefix}journal:{journal_id}:position"
        self._dedup_prefix = f"{key_prefix}dedup:"
        self._ttl = outcome_dedup_ttl_s
        self._client = redis.Redis.from_url(
            redis_url, socket_connect_timeout=min(1.0, socket_timeout_s), socket_timeout=socket_timeout_s
        )
        # Retrying is the caller's job (the batch stays in the journal); redis-py's own retries would only stall it.
        self._client.set_retry(Retry(NoBackoff(), 0))
        self._script = self._client.register_script(_COMMIT_SCRIPT)

    def position(self) -> Position | None:
        """The position Redis holds for this journal (None: nothing committed yet). Raises when Redis is down."""
        return self.holder()[0]

    def holder(self) -> tuple[Position | None, str | None]:
        """The position Redis holds and the epoch of the writer whose records it reached (None: not known)."""
        raw = self._client.get(self.position_key)
        if raw is None:
            return None, None
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        epoch = text.split("@", 1)[1] if "@" in text else None
        return Position.decode(text), epoch

    def commit(self, records: list[StreamRecord], *, expected: Position | None, new: Position) -> CommitResult:
        """Write ``records`` and move the position from ``expected`` to ``new``, atomically.

        Raises:
            redis.RedisError / OSError: Redis did not take the batch (nothing was written); see :func:`is_transient`.
        """
        keys: list[str] = [self.position_key]
        stored = new.encode() + (f"@{self.writer_epoch}" if self.writer_epoch else "")
        args: list[str | int] = [expected.encode() if expected else "", stored, self._ttl]
        for record in records:
            keys += (record.stream, self._dedup_prefix + (record.dedup_id or ""))
            args += ("1" if record.dedup_id else "0", len(record.fields))
            for name, value in record.fields.items():
                args += (name, value)
        reply = self._script(keys=keys, args=args)
        if int(reply[0]) == _ALREADY:
            return CommitResult(CommitOutcome.ALREADY, current=new)
        if int(reply[0]) == _CONFLICT:
            current = reply[1]
            return CommitResult(CommitOutcome.CONFLICT, current=Position.decode(current) if current else None)
        codes = [int(c) for c in reply[1:]]
        return CommitResult(
            CommitOutcome.COMMITTED,
            written=codes.count(_WRITTEN),
            duplicates=codes.count(_DUPLICATE),
            refused=tuple(i for i, c in enumerate(codes) if c == _WRONG_TYPE),
        )

    def ping(self) -> bool:
        try:
            return bool(self._client.ping())
        except (rex.RedisError, OSError):
            return False

    def close(self) -> None:
        self._client.close()
