"""Reading a Redis Stream through a consumer group: claim what a dead consumer left, read, ack, trim.

An entry is acknowledged only after the warehouse has committed it; until then it stays pending in the group and is
delivered again (to this consumer, or claimed by another with XAUTOCLAIM once idle long enough).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.exceptions as rex

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    """One stream entry: its id and its fields as Redis returned them (bytes, or str for a decoding client)."""

    entry_id: str
    raw: dict[Any, Any]

    def get(self, name: str) -> bytes | None:
        """One field as bytes (None when absent)."""
        value = self.raw.get(name.encode())
        if value is None:
            value = self.raw.get(name)
        return value.encode() if isinstance(value, str) else value

    @property
    def fields(self) -> dict[str, str]:
        """Every field decoded to str (undecodable bytes replaced)."""
        return {_text(k): _text(v) for k, v in self.raw.items()}


def _entries(raw: Any) -> list[Entry]:
    out = []
    for entry_id, fields in raw or ():
        if fields is None:  # deleted (trimmed) while pending: nothing left to load
            continue
        out.append(Entry(_text(entry_id), fields))
    return out


def _read_reply(reply: Any) -> list[Entry]:
    """Entries of an XREADGROUP reply on one stream (RESP2: ``[[name, entries]]``; RESP3: ``{name: [entries]}``)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        (entries,) = reply.values()
        return _entries(entries[0] if entries and isinstance(entries[0], list) else entries)
    return _entries(reply[0][1])


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _next_id(entry_id: str) -> str:
    ms, seq = entry_id.split("-")
    return f"{ms}-{int(seq) + 1}"


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
        return _read_reply(self.client.xreadgroup(self.group, self.consumer, {self.stream: after}, count=count))

    def read_new(self, count: int) -> list[Entry]:
        """Entries never delivered to the group, oldest first (they become pending for this consumer)."""
        return _read_reply(self.client.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=count))

    def ack(self, entry_ids: Sequence[str]) -> int:
        """Acknowledge entries (after the warehouse committed them)."""
        if not entry_ids:
            return 0
        acked = 0
        for start in range(0, len(entry_ids), 10_000):
            acked += int(self.client.xack(self.stream, self.group, *entry_ids[start : start + 10_000]))
        return acked

    def trim_acknowledged(self) -> int:
        """Delete the entries every consumer of the group is done with: all before the oldest pending entry, or
        everything delivered when nothing is pending. Returns how many were deleted."""
        groups = {_text(g["name"]): g for g in self.client.xinfo_groups(self.stream)}
        group = groups.get(self.group)
        if group is None:
            return 0
        pending = self.client.xpending(self.stream, self.group)
        if pending and pending.get("pending"):
            min_id = _text(pending["min"])
        else:
            last = _text(group["last-delivered-id"])
            if last == "0-0":
                return 0
            min_id = _next_id(last)
        return int(self.client.xtrim(self.stream, minid=min_id, approximate=False))

    def pending_count(self) -> int:
        pending = self.client.xpending(self.stream, self.group)
        return int(pending.get("pending", 0)) if pending else 0
