"""Deployment events into the warehouse's ``deployment_events`` table, by stage + MERGE on the event id."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa

from shadowgate.config import WarehouseSettings
from shadowgate.events.deployment import DeploymentEvent
from shadowgate.storage.warehouse import DEPLOYMENT_EVENTS, MergeResult, Warehouse, arrow_schema, unique_on_key

logger = logging.getLogger(__name__)


def deployment_events_batch(events: Sequence[DeploymentEvent]) -> pa.Table:
    """The events as a batch of ``deployment_events`` rows (each event id once)."""
    batch = pa.Table.from_pylist([event.row() for event in events], schema=arrow_schema(DEPLOYMENT_EVENTS))
    return unique_on_key(DEPLOYMENT_EVENTS, batch)


class WarehouseDeploymentLog:
    """Writes deployment events to the warehouse; re-sending an event is harmless (MERGE on ``event_id``).

    The warehouse is opened for each write and closed after it: alias moves are rare, and the embedded DuckDB file
    takes one writing process at a time (opening it waits for the process that has it: ``storage.turns``). The
    retries cover a write that still fails (a warehouse briefly unreachable).

    Args:
        open_warehouse: opens the warehouse (``shadowgate.storage.open_warehouse`` with the settings).
        timeout_s: how long to keep retrying a write that fails.
    """

    def __init__(self, open_warehouse: Callable[[], Warehouse], *, timeout_s: float = 30.0) -> None:
        self._open = open_warehouse
        self.timeout_s = timeout_s

    @classmethod
    def from_settings(cls, settings: WarehouseSettings, *, home: Path) -> WarehouseDeploymentLog:
        """The warehouse the settings name (``SHADOWGATE_WAREHOUSE_*``)."""
        from shadowgate.storage import open_warehouse

        return cls(lambda: open_warehouse(settings, home=home))

    def record(self, event: DeploymentEvent) -> None:
        """Store ``event`` (once, however often it is sent).

        Raises:
            Exception: the last error when the warehouse still refused the write after ``timeout_s``.
        """
        self.record_many([event])

    def record_many(self, events: Sequence[DeploymentEvent]) -> MergeResult | None:
        """Store several events in one MERGE; returns what it did (None for no events)."""
        if not events:
            return None
        batch = deployment_events_batch(events)
        deadline = time.monotonic() + self.timeout_s
        delay = 0.5
        while True:
            try:
                return self._write(batch)
            except Exception as error:
                if time.monotonic() + delay > deadline:
                    raise
                logger.warning("deployment events not written yet (%s); retrying in %.1f s", error, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _write(self, batch: pa.Table) -> MergeResult:
        warehouse = self._open()
        try:
            warehouse.ensure_tables()
            staging = warehouse.stage(DEPLOYMENT_EVENTS, batch, batch_id=f"deploy_{batch.column('event_id')[0]}")
            return warehouse.merge(DEPLOYMENT_EVENTS, staging=staging)
        finally:
            warehouse.close()
