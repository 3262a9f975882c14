"""Events as Redis Stream entries: the envelope, its encoding and decoding, and why an entry is malformed.

A stream entry is a flat map of strings (:func:`to_stream_fields`): a small envelope (encoding version, event id,
kind) plus the event as compact JSON. :func:`from_stream_fields` decodes it and raises :class:`MalformedEventError`
with a machine-readable :class:`MalformedReason` for anything it cannot trust, so bad entries can be quarantined by
reason rather than crash a consumer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import pydantic

from shadowgate.events.base import ARRAY_FEATURES_SINCE, SCHEMA_VERSION
from shadowgate.events.outcome import OutcomeEvent
from shadowgate.events.prediction import PredictionEvent

STREAM_ENCODING_VERSION = "1"
"""Version of the stream-entry envelope (the ``v`` field), independent of the payload schema."""

PREDICTION = "prediction"
OUTCOME = "outcome"

Event = PredictionEvent | OutcomeEvent

KINDS: dict[str, type[Event]] = {PREDICTION: PredictionEvent, OUTCOME: OutcomeEvent}
"""The ``kind`` of an entry → the event model its payload is."""


class MalformedReason(StrEnum):
    """Why a stream entry could not be decoded; the warehouse uploader quarantines by this reason."""

    NOT_UTF8 = "not_utf8"
    MISSING_ENVELOPE = "missing_envelope"
    UNSUPPORTED_ENCODING = "unsupported_encoding"
    UNKNOWN_KIND = "unknown_kind"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_SCHEMA_VERSION = "missing_schema_version"
    INVALID_SCHEMA_VERSION = "invalid_schema_version"
    FUTURE_SCHEMA_VERSION = "future_schema_version"
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"
    ID_MISMATCH = "id_mismatch"


class MalformedEventError(ValueError):
    """A stream entry that is not a valid event of a schema version this code understands.

    Attributes:
        reason: what is wrong, machine-readable.
        detail: human-readable specifics (the offending field, the parser message).
    """

    def __init__(self, reason: MalformedReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


def kind_of(event: Event) -> str:
    """The envelope ``kind`` of an event."""
    return next(kind for kind, model in KINDS.items() if isinstance(event, model))


def to_stream_fields(event: Event) -> dict[str, str]:
    """The stream entry of an event: ``{"v", "id", "kind", "payload"}``, all strings, payload compact JSON.

    A prediction whose features are exactly its known feature set, in order, is written with them as an array
    tagged with the set's id (as the service writes it); other features keep the named object.
    """
    from shadowgate.features import FEATURE_SETS

    # pydantic writes compact JSON (no spaces) and handles datetimes and non-finite floats itself.
    payload = event.model_dump_json()
    if (
        isinstance(event, PredictionEvent)
        and event.schema_version >= ARRAY_FEATURES_SINCE
        and event.feature_set is not None
        and tuple(event.features) == FEATURE_SETS.get(event.feature_set)
    ):
        data = json.loads(payload)
        data["features"] = list(data["features"].values())
        payload = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return {"v": STREAM_ENCODING_VERSION, "id": event.event_id, "kind": kind_of(event), "payload": payload}


def _text(value: str | bytes) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedEventError(MalformedReason.NOT_UTF8, str(exc)) from exc
    return value


def from_stream_fields(fields: Mapping[str, str] | Mapping[bytes, bytes] | Mapping[Any, Any]) -> Event:
    """Decode a stream entry written by :func:`to_stream_fields` (str or bytes keys and values, as redis-py gives).

    Raises:
        MalformedEventError: with a distinct :class:`MalformedReason` for each kind of problem.
    """
    entry = {_text(k): _text(v) for k, v in fields.items()}
    missing = [name for name in ("v", "id", "kind", "payload") if name not in entry]
    if missing:
        raise MalformedEventError(MalformedReason.MISSING_ENVELOPE, f"missing {', '.join(missing)}")
    if entry["v"] != STREAM_ENCODING_VERSION:
        raise MalformedEventError(MalformedReason.UNSUPPORTED_ENCODING, f"v={entry['v']!r}")
    model = KINDS.get(entry["kind"])
    if model is None:
        raise MalformedEventError(MalformedReason.UNKNOWN_KIND, f"kind={entry['kind']!r}")
    try:
        payload = json.loads(entry["payload"])
    except ValueError as exc:
        raise MalformedEventError(MalformedReason.INVALID_JSON, str(exc)) from exc
    if not isinstance(payload, dict):
        raise MalformedEventError(MalformedReason.NOT_AN_OBJECT, type(payload).__name__)
    _check_schema_version(payload)
    try:
        event = model.model_validate(payload)
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        reason = (
            MalformedReason.MISSING_FIELD
            if any(err["type"] == "missing" for err in errors)
            else MalformedReason.INVALID_FIELD
        )
        where = "; ".join(f"{'.'.join(map(str, err['loc'])) or '<event>'}: {err['msg']}" for err in errors[:5])
        raise MalformedEventError(reason, where) from exc
    if event.event_id != entry["id"]:
        raise MalformedEventError(MalformedReason.ID_MISMATCH, f"envelope {entry['id']!r} != {event.event_id!r}")
    return event


def _check_schema_version(payload: dict[str, Any]) -> None:
    if "schema_version" not in payload:
        raise MalformedEventError(MalformedReason.MISSING_SCHEMA_VERSION)
    version = payload["schema_version"]
    # bool is an int in Python; a JSON true is not a version.
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise MalformedEventError(MalformedReason.INVALID_SCHEMA_VERSION, repr(version))
    if version > SCHEMA_VERSION:
        raise MalformedEventError(
            MalformedReason.FUTURE_SCHEMA_VERSION, f"{version} > {SCHEMA_VERSION} (written by a newer producer)"
        )
