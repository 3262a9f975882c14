"""Deployment events: every move of a registry alias, with why, by whom and on what evidence.

The registry (:mod:`shadowgate.registry`) writes one :class:`DeploymentEvent` per alias move, first as tags on the
model version in MLflow, then as a row of the warehouse's ``deployment_events`` table. The event id is derived from
the move itself (:func:`deployment_event_id`), so sending the same recorded move twice stores it once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any, Literal

import pydantic
from pydantic import AwareDatetime, Field

DEPLOYMENT_SCHEMA_VERSION = 2
"""Version of the deployment event schema. Bump it on any change a reader of the previous version would misread.

1. The first: the columns of ``deployment_events`` (``include/sql/ddl/deployment_events.sql``).
2. The actions ``retire`` and ``rollback``, and ``to_version`` None for an alias removed (same columns)."""

DeploymentAction = Literal["first_deployment", "assign", "promote", "force_champion", "retire", "rollback"]
"""Why an alias moved:

* ``first_deployment`` — ``@champion`` was not set (the bootstrap of a new system);
* ``assign`` — a training pointed a non-champion alias (``@challenger``, ``@challenger-<suffix>``) at its version;
* ``promote`` — the promotion gate moved ``@champion`` (the replaced version to ``@previous``, and the promoted
  version's challenger alias removed);
* ``force_champion`` — an operator moved ``@champion`` by hand (``shadowgate train --force-champion``, removed: read
  in the records of earlier versions, never made now);
* ``retire`` — the promotion gate removed a challenger alias: its comparison ended futile or not shown;
* ``rollback`` — an operator moved ``@champion`` back to ``@previous`` (``shadowgate rollback --reason …``, or the
  admin endpoint), and ``@previous`` was removed.
"""

DEPLOYMENT_ACTIONS: tuple[DeploymentAction, ...] = (
    "first_deployment",
    "assign",
    "promote",
    "force_champion",
    "retire",
    "rollback",
)


class DeploymentEvent(pydantic.BaseModel):
    """One alias move of a registered model; one row of ``deployment_events``."""

    # extra="forbid": a field this version does not know means the producer is newer or broken.
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    schema_version: int = Field(default=DEPLOYMENT_SCHEMA_VERSION, ge=1, le=DEPLOYMENT_SCHEMA_VERSION)
    """Payload schema version (:data:`DEPLOYMENT_SCHEMA_VERSION` when written by this code). Not a warehouse
    column: the table holds the current version's columns."""

    event_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    """Deterministic id of the move (:func:`deployment_event_id`): the warehouse MERGEs on it."""

    occurred_at: AwareDatetime
    """When the alias moved (UTC)."""

    action: DeploymentAction
    """Why it moved (see :data:`DeploymentAction`)."""

    model_name: str = Field(min_length=1)
    """Registered model (``bnpl_default``)."""

    alias: str = Field(min_length=1)
    """The alias that moved (``champion``, ``challenger``, ``previous``, ``challenger-<suffix>``)."""

    from_version: str | None
    """Version the alias pointed at before (None: it was not set)."""

    to_version: str | None
    """Version the alias points at now (None: the alias was removed — a challenger retired or promoted, ``@previous``
    after a rollback)."""

    reason: str = Field(min_length=1)
    """Why, in words: the operator's reason for a forced move, the gate's verdict, the training's summary."""

    actor: str = Field(min_length=1)
    """Who moved it: an operator (``user@host``), ``airflow:<dag_id>``, or the bootstrap."""

    evidence: dict[str, Any] | None = None
    """What the move rests on (training run, validation metrics, the gate's statistics), as JSON."""

    @pydantic.field_validator("occurred_at")
    @classmethod
    def _utc(cls, value: dt.datetime) -> dt.datetime:
        return value.astimezone(dt.UTC)

    def row(self) -> dict[str, Any]:
        """The warehouse row (the columns of ``deployment_events``; ``evidence`` as JSON text)."""
        data = self.model_dump(exclude={"schema_version"})
        data["evidence"] = None if self.evidence is None else json.dumps(self.evidence, sort_keys=True)
        return data


def deployment_event_id(
    *,
    model_name: str,
    alias: str,
    from_version: str | None,
    to_version: str | None,
    action: str,
    occurred_at: dt.datetime,
) -> str:
    """The id of one alias move: the same recorded move always has the same id, two moves never share one.

    The instant is part of the key: moving ``@champion`` from 1 to 2, back to 1 and to 2 again is three moves.
    """
    key = "\x1f".join(
        (
            model_name,
            alias,
            from_version or "",
            to_version or "",
            action,
            occurred_at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        )
    )
    return hashlib.sha256(key.encode()).hexdigest()[:32]
