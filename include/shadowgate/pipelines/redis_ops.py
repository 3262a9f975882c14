"""Redis as the runbook watches it: memory against its limit, the eviction policy, and every consumer group of the
event streams — one that lags, or one left idle with entries it has not consumed (it holds trimming back, so the
streams grow until memory runs out).

Each is a recorded condition (:mod:`shadowgate.pipelines.alerts`): sent once when it begins, resolved when it ends.
``upload_predictions`` runs :func:`check_redis` every hour.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass
from typing import Any

import redis

from shadowgate.pipelines.alerts import Alert, AlertsRecorded, Check, record_alerts, send_alert
from shadowgate.storage.warehouse import Warehouse

logger = logging.getLogger(__name__)

SOURCE = "redis"

LAG_COUNT_CAP = 2_000_000
"""Where a lag Redis does not report itself is counted up to (the count is then a lower bound)."""


@dataclass(frozen=True)
class GroupFigures:
    """One consumer group of one stream.

    Attributes:
        lag: entries in the stream not yet delivered to the group (Redis's own count; None when it cannot tell).
        pending: delivered, not acknowledged.
        idle_s: seconds since any of its consumers last read (None: it has no consumer at all).
    """

    stream: str
    group: str
    consumers: int
    lag: int | None
    pending: int
    idle_s: float | None


@dataclass(frozen=True)
class RedisFigures:
    used_memory: int
    maxmemory: int
    """0: no limit."""
    policy: str
    groups: tuple[GroupFigures, ...]

    @property
    def memory_fraction(self) -> float | None:
        return self.used_memory / self.maxmemory if self.maxmemory else None


def redis_figures(client: redis.Redis, streams: list[str]) -> RedisFigures:
    """Memory, limit and policy (``INFO memory``), and every group of ``streams`` (``XINFO``)."""
    memory = client.info("memory")
    groups: list[GroupFigures] = []
    for stream in streams:
        if not client.exists(stream):
            continue
        for info in client.xinfo_groups(stream):
            name = _text(info["name"])
            consumers = client.xinfo_consumers(stream, name)
            idle = min((int(c["idle"]) for c in consumers), default=None)
            lag = info.get("lag")
            if lag is None:
                # Redis before 7.0 (or a group whose lag it cannot tell): count what follows the last delivered entry,
                # up to a bound (a lower bound past it).
                after = f"({_text(info['last-delivered-id'])}"
                lag = len(client.xrange(stream, min=after, max="+", count=LAG_COUNT_CAP) or [])
            groups.append(
                GroupFigures(
                    stream=stream,
                    group=name,
                    consumers=len(consumers),
                    lag=None if lag is None else int(lag),
                    pending=int(info["pending"]),
                    idle_s=None if idle is None else idle / 1000.0,
                )
            )
    return RedisFigures(
        used_memory=int(memory["used_memory"]),
        maxmemory=int(memory.get("maxmemory", 0)),
        policy=_text(memory.get("maxmemory_policy", "unknown")),
        groups=tuple(groups),
    )


def redis_checks(
    figures: RedisFigures, *, memory_fraction: float, max_lag: int, max_idle_h: float, subject: str = "redis"
) -> list[Check]:
    """The conditions the figures show (one per key; a condition that does not hold resolves its episode)."""
    checks: list[Check] = []
    fraction = figures.memory_fraction
    memory_alert = None
    if fraction is not None and fraction > memory_fraction:
        memory_alert = Alert(
            title="Redis memory is running out",
            text=f"{figures.used_memory / 2**20:,.0f} MiB used of {figures.maxmemory / 2**20:,.0f} MiB "
            f"({fraction:.0%} > {memory_fraction:.0%}); with noeviction, writes fail at the limit and decisions then "
            "wait in the journal: find what holds the streams (a lagging or idle consumer group) or raise the limit",
            details={"used_memory": figures.used_memory, "maxmemory": figures.maxmemory},
            kind="redis_memory",
            subject=subject,
            condition="memory",
            source=SOURCE,
        )
    # Hysteresis: resolved below 90 % of the bound, not the moment it dips under it.
    cleared = fraction is None or fraction < 0.9 * memory_fraction
    checks.append(Check("redis_memory", subject, "memory", memory_alert, cleared=cleared))

    unsafe = figures.policy != "noeviction" or figures.maxmemory == 0
    policy_alert = None
    if unsafe:
        policy_alert = Alert(
            title="Redis could evict events or grow without bound",
            text=f"maxmemory-policy is {figures.policy} and maxmemory {figures.maxmemory or 'unset'}: the event "
            "streams need a memory limit with noeviction (an evicted entry is a lost decision)",
            details={"policy": figures.policy, "maxmemory": figures.maxmemory},
            kind="redis_policy",
            subject=subject,
            condition="eviction",
            source=SOURCE,
        )
    checks.append(Check("redis_policy", subject, "eviction", policy_alert))

    for g in figures.groups:
        name = f"{g.stream}/{g.group}"
        lagging = g.lag is not None and g.lag > max_lag
        checks.append(
            _group_check(
                g,
                "lag",
                holds=lagging,
                title=f"consumer group {name} lags",
                text=f"{g.lag:,} entries not yet read (bound {max_lag:,}): the uploader is behind or failing",
                cleared=not lagging and (g.lag is None or g.lag < max_lag // 2),
            )
        )
        idle = g.idle_s is None or g.idle_s > max_idle_h * 3600
        silent = "no consumer" if g.idle_s is None else f"no read for {g.idle_s / 3600:,.1f} h"
        checks.append(
            _group_check(
                g,
                "idle",
                holds=idle and ((g.lag or 0) > 0 or g.pending > 0),
                title=f"consumer group {name} is idle and blocks trimming",
                text=f"{silent} (bound {max_idle_h:g} h) with {g.lag or 0:,} unread and {g.pending:,} pending "
                "entries: the stream is trimmed only below what every group consumed, so it grows; resume the reader, "
                "or delete the group if it is abandoned (XGROUP DESTROY)",
            )
        )
    return checks


def _group_check(g: GroupFigures, condition: str, *, holds: bool, title: str, text: str, cleared: bool = True) -> Check:
    """The recorded condition ``redis_group_<condition>`` of one consumer group (its alert when it holds)."""
    kind, subject = f"redis_group_{condition}", f"{g.stream}/{g.group}"
    alert = Alert(title=title, text=text, details=asdict(g), kind=kind, subject=subject, condition=condition,
                  source=SOURCE) if holds else None  # fmt: skip
    return Check(kind, subject, condition, alert, cleared=cleared)


def check_redis(
    *,
    client: redis.Redis,
    warehouse: Warehouse,
    streams: list[str],
    at: dt.datetime,
    memory_fraction: float,
    max_lag: int,
    max_idle_h: float,
    webhook_url: str | None,
) -> dict[str, Any]:
    """Measure Redis, record the conditions as of ``at`` and send those that began. Returns the figures and what was
    sent, held and resolved (the task's return value)."""
    figures = redis_figures(client, streams)
    warehouse.ensure_tables()
    checks = redis_checks(figures, memory_fraction=memory_fraction, max_lag=max_lag, max_idle_h=max_idle_h)
    recorded: AlertsRecorded = record_alerts(
        warehouse, checks, at=at, send=lambda alert: send_alert(alert, webhook_url=webhook_url)
    )
    return {
        "used_memory_mb": round(figures.used_memory / 2**20, 1),
        "maxmemory_mb": round(figures.maxmemory / 2**20, 1),
        "policy": figures.policy,
        "groups": [asdict(g) for g in figures.groups],
        "sent": list(recorded.sent),
        "held": list(recorded.held),
        "resolved": list(recorded.resolved),
        "failed": list(recorded.failed),
    }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
