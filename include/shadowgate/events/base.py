"""What every event shares: the payload schema version, event ids, the frozen base model and the field markers.

The markers say what a free-form field of an event holds, so that :mod:`shadowgate.events.schemas` can derive its
columns and its wire types without a hand-written list: :class:`ContractInputs` (fields of the transaction
contract) and :class:`FeatureVector` (engineered features of a named feature set).
"""

from __future__ import annotations

import datetime as dt
import os
import random
from dataclasses import dataclass
from typing import Annotated

import pydantic
from pydantic import Field

SCHEMA_VERSION = 2
"""Version of the event payload schema. Bump it on any change a reader of the previous version would misread.

1. The first.
2. A prediction's ``features`` may be an array in the order of the feature set named by ``feature_set`` (what the
   service writes: the named object was two thirds of the bytes of an event). Version 1 payloads still read."""

ARRAY_FEATURES_SINCE = 2
"""First payload schema version whose prediction events may carry their features as an array."""

EVENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
"""Event ids become part of Redis keys (the dedup marker); keep them short and free of spaces and braces."""

EventId = Annotated[str, Field(pattern=EVENT_ID_PATTERN)]
UnitInterval = Annotated[float, Field(ge=0.0, le=1.0)]

_IDS = random.Random(int.from_bytes(os.urandom(32), "big"))


def new_event_id() -> str:
    """A fresh random 128-bit event id (32 hex characters); for predictions also the prediction / request id.

    Drawn from a generator seeded once per process from the OS entropy pool, not from ``uuid4``: ``uuid4`` reads
    ``os.urandom`` on every call, a system call that measured ~50 µs here — more than the whole decision. The ids are
    identifiers, not secrets; 128 random bits make a collision between any two of them negligible.
    """
    return f"{_IDS.getrandbits(128):032x}"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class FrozenEvent(pydantic.BaseModel):
    """Base of every event and of the models nested in one."""

    # extra="forbid": a field this version does not know means the producer is newer or broken; either way the
    # reader must not silently drop it. Non-finite floats are written as strings so nothing is lost in JSON.
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings")


@dataclass(frozen=True)
class ContractInputs:
    """Marks a field holding the transaction's contract fields (:data:`shadowgate.contract.TRANSACTION_FIELDS`)
    except ``excluded``; in the warehouse each becomes a column of its own (unless the event has a field of that
    name already)."""

    excluded: tuple[str, ...] = ()


@dataclass(frozen=True)
class FeatureVector:
    """Marks a field holding engineered features of the feature set named by the field ``set_field``
    (:data:`shadowgate.features.FEATURE_SETS`); in the warehouse one struct with a field per feature name of every
    known set."""

    set_field: str
