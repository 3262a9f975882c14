"""Reading a Redis Stream through a consumer group: claim what a dead consumer left, read, ack, trim.

An entry is acknowledged only after the warehouse has committed it; until then it stays pending in the group and is
delivered again (to this consumer, or claimed by another with XAUTOCLAIM once idle long enough).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import redis
import redis.exceptions as rex

logger = logging.getLogger(__name__)


class Entry(NamedTuple):
    """One stream entry: its id and its fields as Redis returned them.

    ``raw`` is a mapping (field → value, bytes or str) or, as :class:`StreamReader` gives it, the flat
    ``[field, value, field, value, …]`` list of the reply: building a dict per entry cost more than reading it.
    """

    entry_id: str
    raw: Mapping[Any, Any] | Sequence[Any]

    def get(self, name: str) -> bytes | None:
        """One field as bytes (None when absent)."""
        raw = self.raw
        if isinstance(raw, Mapping):
            value = raw.get(name.encode())
            if value is None:
                value = raw.get(name)
        else:
            key, value = name.encode(), None
            for i in range(0, len(raw) - 1, 2):
                if raw[i] == key or raw[i] == name:
                    value = raw[i + 1]
                    break
        return value.encode() if isinstance(value, str) else value

    def items(self) -> list[tuple[Any, Any]]:
        """The ``(field, value)`` pairs as Redis returned them."""
        raw = self.raw
        if isinstance(raw, Mapping):
            return list(raw.items())
        return list(zip(raw[0::2], raw[1::2], strict=False))

    @property
    def fields(self) -> dict[str, str]:
        """Every field decoded to str (undecodable bytes replaced)."""
        return {_text(k): _text(v) for k, v in self.items()}


def _entries(raw: Any) -> list[Entry]:
    # Entries deleted (trimmed) while pending come back with no fields: nothing left to load.
    return [Entry(_text(entry_id), fields) for entry_id, fields in raw or () if fields is not None]


def _read_reply(reply: Any) -> list[Entry]:
    """Entries of a raw XREADGROUP reply on one stream (RESP2: ``[[name, entries]]``; RESP3: ``{name: entries}``)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        (entries,) = reply.values()
        return _entries(entries)
    return _entries(reply[0][1])


def _identity(reply: Any, **_: Any) -> Any:
    return reply


def stream_client(url: str, **kwargs: Any) -> redis.Redis:
    """A Redis client for bulk stream reads: replies of a 10,000-entry batch are tens of MB, read in 1 MiB chunks
    (redis-py's default 32 KiB chunks cost ~2 µs an entry more)."""
    return redis.Redis.from_url(url, socket_read_size=1 << 20, **kwargs)


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


# One script, so that no group can be created, read from or acked between computing the bound and trimming.
# Ids are compared as (ms, seq) decimal strings by length, then text: numbers past 2^53 stay exact.
_TRIM_CONSUMED = """
local function less(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  if #ams ~= #bms then return #ams < #bms end
  if ams ~= bms then return ams < bms end
  if #aseq ~= #bseq then return #aseq < #bseq end
  return aseq < bseq
end
local function successor(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  local digits, carry = {}, 1
  for i = #seq, 1, -1 do
    local d = string.byte(seq, i) - 48 + carry
    carry = math.floor(d / 10)
    digits[i] = string.char(48 + d % 10)
  end
  local next_seq = table.concat(digits)
  if carry > 0 then next_seq = '1' .. next_seq end
  return ms .. '-' .. next_seq
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local bound = nil
for _, group in ipairs(groups) do
  local info = {}
  for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
  local safe
  if tonumber(info['pending']) > 0 then
    safe = redis.call('XPENDING', KEYS[1], info['name'])[2]
  elseif info['last-delivered-id'] == '0-0' then
    return 0
  else
    safe = successor(info['last-delivered-id'])
  end
  if bound == nil or less(safe, bound) then bound = safe end
end
return redis.call('XTRIM', KEYS[1], 'MINID', '=', bound)
"""


def trim_consumed(client: redis.Redis, stream: str) -> int:
    """Delete the stream's entries that every consumer group has consumed; returns how many were deleted.

    For each group, what is safely consumed is everything before its oldest pending entry (delivered, not acked
    yet) or, when nothing is pending, everything up to its last-delivered id; the stream is trimmed below the
    minimum over all groups. A group that lags (has not read entries yet) or has not read at all holds the trim
    back, so an analytics reader never loses what the uploader has acked; a stream without groups is left alone.
    """
    return int(client.eval(_TRIM_CONSUMED, 1, stream))


class StreamReader:
    """One consumer of one group on one stream.

    Args:
        client: a Redis client.
        stream: the stream key.
        group: the consumer group (created at the stream's start when missing).
        consumer: this consumer's name.
    """

    def __init__(self, client: redis.Redis, *, stream: str, group: str, consumer: str) -> None:
        self.client = client
        # The same connections without redis-py's reply parsing for XREADGROUP: its per-entry dicts cost more than
        # reading the entries; :func:`_read_reply` takes the raw reply.
        self._raw = redis.Redis(connection_pool=client.connection_pool)
        self._raw.set_response_callback("XREADGROUP", _identity)
        self.stream = stream
        self.group = group
        self.consumer = consumer

    def ensure_group(self) -> None:
        """Create the group (reading from the stream's first entry) unless it exists; creates an empty stream too."""
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except rex.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def claim_stale(self, *, min_idle_ms: int, count: int = 1000) -> list[Entry]:
        """Take over entries pending for other consumers for at least ``min_idle_ms`` (XAUTOCLAIM), all of them."""
        claimed: list[Entry] = []
        cursor = "0-0"
        while True:
            reply = self.client.xautoclaim(
                self.stream, self.group, self.consumer, min_idle_time=min_idle_ms, start_id=cursor, count=count
            )
            cursor = _text(reply[0])
            claimed.extend(_entries(reply[1]))
            if cursor == "0-0":
                return claimed

    def read_pending(self, count: int, after: str = "0") -> list[Entry]:
        """This consumer's own pending entries (delivered before, never acked), oldest first, after ``after``."""
        return self._read(after, count)

    def read_new(self, count: int) -> list[Entry]:
        """Entries never delivered to the group, oldest first (they become pending for this consumer)."""
        return self._read(">", count)

    def _read(self, after: str, count: int) -> list[Entry]:
        reply = self._raw.execute_command(
            "XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count, "STREAMS", self.stream, after
        )
        return _read_reply(reply)

    def ack(self, entry_ids: Sequence[str]) -> int:
        """Acknowledge entries (after the warehouse committed them)."""
        if not entry_ids:
            return 0
        acked = 0
        for start in range(0, len(entry_ids), 10_000):
            acked += int(self.client.xack(self.stream, self.group, *entry_ids[start : start + 10_000]))
        return acked

    def trim_acknowledged(self) -> int:
        """Delete the entries every consumer group on the stream is done with (see :func:`trim_consumed`), not only
        this reader's group. Returns how many were deleted."""
        return trim_consumed(self.client, self.stream)

    def pending_count(self) -> int:
        pending = self.client.xpending(self.stream, self.group)
        return int(pending.get("pending", 0)) if pending else 0
