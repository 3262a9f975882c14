"""Admission control: shed load instead of queueing it, and refuse oversized bodies before reading them.

A pure ASGI middleware (no per-request objects beyond a counter), in front of every route:

* **Body limit.** A request whose ``Content-Length`` is over ``max_body_bytes`` is answered 413 at once, with
  ``Connection: close``, before a byte of its body is read; a body without a length (chunked) is counted as it
  arrives and refused at the limit.
* **In-flight cap.** A request that finds ``max_in_flight`` others admitted and unfinished is answered 503 with
  ``Retry-After`` at once (a few µs), instead of waiting behind them. Admitted requests first yield to the event loop
  once, so every request that arrived in the same loop turn is counted before any of them runs: the cap then bounds
  the work the loop does between two looks at its sockets, and with it how long ``/health/live`` can wait.
  Health and metrics routes are exempt: they are how an operator sees the overload.
* **Loop lag.** The cap bounds one loop turn's decisions, not the turn: past saturation, parsing and shedding what
  arrives fills the turn too. A watcher sleeps 5 ms at a time and measures how late it wakes; while it wakes later than
  ``max_loop_lag_s`` three times in a row, new requests are shed as above, so the turn shortens until the loop is
  back on time (a single slow request sheds nothing).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

LAG_SAMPLES = 3
"""The loop counts as late when this many watcher wake-ups in a row were late."""

EXEMPT_PREFIXES = ("/health/", "/metrics")
"""Never shed: probes and scrapes must see the overload, not be part of it."""


class BodyTooLargeError(Exception):
    """A chunked body passed the limit while being read."""


class Admission:
    """The middleware. ``max_in_flight`` and ``max_body_bytes`` come from ``ApiSettings``; ``retry_after_s`` is the
    ``Retry-After`` of a shed request; ``state`` (the app's) is given ``admission`` = this instance."""

    def __init__(
        self,
        app: App,
        *,
        max_in_flight: int,
        max_body_bytes: int,
        retry_after_s: int,
        max_loop_lag_s: float = 0.02,
        state: Any = None,
    ) -> None:
        if max_in_flight < 1 or max_body_bytes < 1:
            raise ValueError("max_in_flight and max_body_bytes must be positive")
        if state is not None:
            state.admission = self  # for its metrics (Starlette builds middleware itself)
        self.app = app
        self.max_in_flight = max_in_flight
        self.max_body_bytes = max_body_bytes
        self.retry_after = str(retry_after_s).encode()
        self.max_loop_lag_s = max_loop_lag_s
        self.lag = 0.0
        """How late the watcher last woke (s)."""
        self._watcher: asyncio.Task[None] | None = None
        self.in_flight = 0
        self.shed = 0
        """Requests answered 503 by the in-flight cap."""
        self.too_large = 0
        """Requests answered 413 by the body limit."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.max_body_bytes:
            self.too_large += 1
            await self._refuse(send, 413, f"the body is {length:,} bytes; the limit is {self.max_body_bytes:,}")
            return
        if length is None and scope.get("method") in ("POST", "PUT", "PATCH"):
            receive = self._counted(receive)
        if scope["path"].startswith(EXEMPT_PREFIXES):
            await self._run(scope, receive, send)
            return
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        self.in_flight += 1
        try:
            if self.in_flight > self.max_in_flight or self.lag > self.max_loop_lag_s:
                self.shed += 1
                await self._refuse(send, 503, "overloaded: nothing was decided or recorded; retry after Retry-After")
                return
            await asyncio.sleep(0)  # let the rest of this loop turn's arrivals be counted before any work
            await self._run(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        samples: collections.deque[float] = collections.deque(maxlen=LAG_SAMPLES)
        while True:
            started = loop.time()
            await asyncio.sleep(0.005)
            samples.append(max(loop.time() - started - 0.005, 0.0))
            # Late every time, not once: one slow request (a first /openapi.json, a collection pause) sheds nothing.
            self.lag = min(samples) if len(samples) == samples.maxlen else 0.0

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except BodyTooLargeError:
            self.too_large += 1
            if not started:
                await self._refuse(send, 413, f"the body passed the limit of {self.max_body_bytes:,} bytes")

    def _counted(self, receive: Receive) -> Receive:
        seen = 0
        limit = self.max_body_bytes

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLargeError
            return message

        return counted

    async def _refuse(self, send: Send, status: int, detail: str) -> None:
        headers = [(b"content-type", b"application/json")]
        if status == 503:
            headers.append((b"retry-after", self.retry_after))
        else:
            headers.append((b"connection", b"close"))  # the unread body must not be parsed as the next request
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": orjson.dumps({"detail": detail})})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class AdmissionCollector(Collector):
    """``/metrics`` figures of the admission control."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission

    def collect(self) -> Iterator[Any]:
        a = self._admission
        gauge = GaugeMetricFamily("shadowgate_requests_in_flight", "Requests admitted and not yet answered.")
        gauge.add_metric([], float(a.in_flight))
        yield gauge
        limit = GaugeMetricFamily(
            "shadowgate_requests_in_flight_limit", "The in-flight cap (SHADOWGATE_API_MAX_IN_FLIGHT)."
        )
        limit.add_metric([], float(a.max_in_flight))
        yield limit
        refused = CounterMetricFamily(
            "shadowgate_requests_refused", "Requests refused before any work: shed (503) or body too large (413).",
            labels=["reason"],
        )  # fmt: skip
        refused.add_metric(["in_flight_cap"], float(a.shed))
        refused.add_metric(["body_too_large"], float(a.too_large))
        yield refused
