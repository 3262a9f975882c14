"""The feature contract: the BNPL transaction, declared once.

Every other view of a transaction is derived from :data:`TRANSACTION_FIELDS` and :data:`CROSS_FIELD_RULES`:

* :func:`request_model` — the pydantic model behind the HTTP request body (unknown fields rejected);
* :func:`pandera_schema` — the dataframe check used before data enters the warehouse;
* :func:`warehouse_columns` — column names and BigQuery types of the logged transaction;
* :func:`drift_columns` — which columns drift checks compare, numerical and categorical.

Adding a feature is a one-place change: append a :class:`ContractField` here.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal

import pydantic
from pydantic_core import PydanticCustomError

if TYPE_CHECKING:
    import pandera.pandas as pa


class Kind(StrEnum):
    """Value kinds; each maps to one Python type, one pandas dtype and one BigQuery type."""

    STRING = "string"
    INTEGER = "integer"
    FLOAT = "float"
    TIMESTAMP = "timestamp"


class Role(StrEnum):
    """What a field is for."""

    IDENTIFIER = "identifier"
    """Identifies an entity; never a model input, never drift-checked."""
    TIMESTAMP = "timestamp"
    """When the purchase happened; engineered into time-of-day features."""
    FEATURE = "feature"
    """Describes the purchase or the customer; a model input and drift-checked."""
    CONTEXT = "context"
    """Describes the purchase but is not a model input; still drift-checked."""


_BQ_TYPES = {Kind.STRING: "STRING", Kind.INTEGER: "INT64", Kind.FLOAT: "FLOAT64", Kind.TIMESTAMP: "TIMESTAMP"}
_PY_TYPES: dict[Kind, Any] = {
    Kind.STRING: str,
    Kind.INTEGER: int,
    Kind.FLOAT: float,
    Kind.TIMESTAMP: dt.datetime,
}
_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


@dataclass(frozen=True)
class ContractField:
    """One field of the transaction with its constraints.

    ``choices`` is a closed set (anything else is invalid input); ``vocabulary`` is the set of values known when the
    contract was written for an open field (new values are valid and map to an "other" bucket in the features).
    """

    name: str
    kind: Kind
    role: Role
    description: str
    example: Any
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    choices: tuple[str | int, ...] | None = None
    vocabulary: tuple[str, ...] | None = None
    pattern: str | None = None

    @property
    def categorical(self) -> bool:
        """Compared by category frequencies (closed or open set) rather than by distribution of values."""
        return self.choices is not None or self.vocabulary is not None

    @property
    def bigquery_type(self) -> str:
        return _BQ_TYPES[self.kind]


@dataclass(frozen=True)
class LessOrEqual:
    """Cross-field rule: ``left <= right`` in every valid transaction."""

    left: str
    right: str

    @property
    def message(self) -> str:
        return f"{self.left} must be <= {self.right}"


TRANSACTION_FIELDS: tuple[ContractField, ...] = (
    ContractField("transaction_id", Kind.STRING, Role.IDENTIFIER, "Unique id of the purchase.", "tx_000001",
                  pattern=_ID_PATTERN),
    ContractField("customer_id", Kind.STRING, Role.IDENTIFIER, "Id of the customer (stored hashed).", "cus_000042",
                  pattern=_ID_PATTERN),
    ContractField("event_timestamp", Kind.TIMESTAMP, Role.TIMESTAMP,
                  "When the purchase was attempted, with a time zone.", "2026-03-02T14:05:00Z"),
    ContractField("amount", Kind.FLOAT, Role.FEATURE, "Basket value in the purchase currency.", 129.99,
                  ge=0.01, le=20_000),
    ContractField("currency", Kind.STRING, Role.CONTEXT, "ISO 4217 currency of the purchase.", "EUR",
                  choices=("EUR", "GBP", "SEK", "USD")),
    ContractField("installments", Kind.INTEGER, Role.FEATURE, "Number of instalments (pay-in-N).", 4,
                  choices=(3, 4, 6)),
    ContractField("merchant_id", Kind.STRING, Role.IDENTIFIER, "Id of the merchant.", "mer_0042",
                  pattern=_ID_PATTERN),
    ContractField("merchant_category", Kind.STRING, Role.FEATURE,
                  "Merchant category; new categories are valid and fall into an 'other' bucket.", "electronics",
                  pattern=r"^[a-z][a-z0-9_]{1,39}$",
                  vocabulary=("electronics", "fashion", "home", "beauty", "travel", "groceries", "sports", "gaming")),
    ContractField("channel", Kind.STRING, Role.FEATURE, "Sales channel.", "web",
                  choices=("web", "app", "in_store", "social")),
    ContractField("device", Kind.STRING, Role.FEATURE, "Device family of the session.", "ios",
                  choices=("ios", "android", "desktop", "other")),
    ContractField("customer_age", Kind.INTEGER, Role.FEATURE, "Age of the customer in years.", 34, ge=18, le=100),
    ContractField("customer_tenure_days", Kind.INTEGER, Role.FEATURE, "Days since the customer signed up.", 420,
                  ge=0, le=36_500),
    ContractField("prior_purchases", Kind.INTEGER, Role.FEATURE, "BNPL purchases before this one.", 7,
                  ge=0, le=100_000),
    ContractField("prior_late_payments", Kind.INTEGER, Role.FEATURE, "Instalments paid late or missed so far.", 1,
                  ge=0, le=100_000),
    ContractField("prior_defaults", Kind.INTEGER, Role.FEATURE, "Purchases that ended in default so far.", 0,
                  ge=0, le=100_000),
    ContractField("outstanding_balance", Kind.FLOAT, Role.FEATURE, "Unpaid BNPL balance before this purchase.",
                  250.0, ge=0, le=1_000_000),
    ContractField("credit_limit", Kind.FLOAT, Role.FEATURE, "The customer's BNPL spending limit.", 1500.0,
                  ge=1, le=100_000),
    ContractField("purchases_last_24h", Kind.INTEGER, Role.FEATURE, "BNPL purchases in the previous 24 hours.", 0,
                  ge=0, le=10_000),
    ContractField("amount_last_7d", Kind.FLOAT, Role.FEATURE, "BNPL spend in the previous 7 days.", 80.0,
                  ge=0, le=1_000_000),
)  # fmt: skip

CROSS_FIELD_RULES: tuple[LessOrEqual, ...] = (LessOrEqual("prior_defaults", "prior_purchases"),)

FIELDS_BY_NAME: dict[str, ContractField] = {f.name: f for f in TRANSACTION_FIELDS}


def field_names() -> tuple[str, ...]:
    """Names of the transaction fields in contract order."""
    return tuple(f.name for f in TRANSACTION_FIELDS)


# The offset is optional here so that a local time gets pydantic's own "timezone_aware" error, naming the problem.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?")


def _rfc3339_text(value: Any) -> Any:
    # pydantic reads numbers and numeric strings ("0", 1.5) as Unix times; on the wire a timestamp is RFC 3339 text,
    # as the schema says (format date-time), so anything else is refused rather than guessed at.
    if isinstance(value, dt.datetime) or (isinstance(value, str) and _RFC3339.fullmatch(value)):
        return value
    raise PydanticCustomError(
        "datetime_type", "Input should be an RFC 3339 date-time with a time zone, e.g. 2026-03-02T14:05:00Z"
    )


Timestamp = Annotated[pydantic.AwareDatetime, pydantic.BeforeValidator(_rfc3339_text)]
"""An instant with a time zone: RFC 3339 text on the wire (``datetime`` objects from Python callers)."""


def _annotation(field: ContractField) -> Any:
    if field.choices is not None:
        return Literal[field.choices]
    if field.kind is Kind.TIMESTAMP:
        return Timestamp
    return _PY_TYPES[field.kind]


class _TransactionBase(pydantic.BaseModel):
    """Behaviour shared by the derived request model: no unknown fields, immutable, cross-field rules."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    @pydantic.model_validator(mode="after")
    def _cross_field_rules(self) -> _TransactionBase:
        for rule in CROSS_FIELD_RULES:
            if getattr(self, rule.left) > getattr(self, rule.right):
                raise ValueError(rule.message)
        return self


@functools.cache
def request_model() -> type[pydantic.BaseModel]:
    """The HTTP request model of one transaction: strict about unknown fields, types and ranges."""
    definitions: dict[str, Any] = {}
    for f in TRANSACTION_FIELDS:
        info = pydantic.Field(
            description=f.description,
            examples=[f.example],
            ge=f.ge,
            gt=f.gt,
            le=f.le,
            pattern=f.pattern,
            allow_inf_nan=False if f.kind is Kind.FLOAT else None,
            # Numbers are JSON numbers: no true/false (pydantic reads them as 1/0) and no numeric strings. A JSON
            # integer is still a valid float.
            strict=True if f.kind in (Kind.INTEGER, Kind.FLOAT) and f.choices is None else None,
        )
        definitions[f.name] = (_annotation(f), info)
    return pydantic.create_model(
        "Transaction",
        __base__=_TransactionBase,
        __doc__="A BNPL purchase to assess (derived from shadowgate.contract).",
        **definitions,
    )


def _pandera_column(field: ContractField, *, arrow_strings: bool = False) -> pa.Column:
    import pandas as pd
    import pandera.pandas as pa

    checks: list[pa.Check] = []
    if field.ge is not None:
        checks.append(pa.Check.ge(field.ge))
    if field.gt is not None:
        checks.append(pa.Check.gt(field.gt))
    if field.le is not None:
        checks.append(pa.Check.le(field.le))
    if field.choices is not None:
        checks.append(pa.Check.isin(list(field.choices)))
    if field.pattern is not None:
        checks.append(pa.Check.str_matches(field.pattern))
    dtype = {
        Kind.STRING: pd.StringDtype("pyarrow") if arrow_strings else str,
        Kind.INTEGER: "int64",
        Kind.FLOAT: "float64",
        Kind.TIMESTAMP: "datetime64[ns, UTC]",
    }[field.kind]
    if field.kind is Kind.FLOAT:
        checks.append(pa.Check(lambda s: s.abs() != float("inf"), element_wise=False, name="finite"))
    return pa.Column(dtype, checks=checks, nullable=False, description=field.description)


@functools.cache
def pandera_schema(*, arrow_strings: bool = False) -> pa.DataFrameSchema:
    """The dataframe schema of a batch of transactions (exact columns, types, ranges and cross-field rules).

    ``arrow_strings``: string columns are ``string[pyarrow]`` rather than Python objects — the uploader's frames, built
    from Arrow, where the same checks run vectorised instead of once per value.
    """
    import pandera.pandas as pa

    wide_checks = [
        pa.Check(lambda df, r=rule: df[r.left] <= df[r.right], name=rule.message) for rule in CROSS_FIELD_RULES
    ]
    return pa.DataFrameSchema(
        {f.name: _pandera_column(f, arrow_strings=arrow_strings) for f in TRANSACTION_FIELDS},
        checks=wide_checks,
        strict=True,
        ordered=False,
        name="transaction",
    )


@dataclass(frozen=True)
class WarehouseColumn:
    """A column of the logged transaction in the warehouse."""

    name: str
    type: str
    mode: str = "REQUIRED"
    description: str = ""


def warehouse_columns() -> tuple[WarehouseColumn, ...]:
    """The transaction's warehouse columns with BigQuery types, in contract order."""
    return tuple(WarehouseColumn(f.name, f.bigquery_type, "REQUIRED", f.description) for f in TRANSACTION_FIELDS)


@dataclass(frozen=True)
class DriftColumns:
    """Columns that drift checks compare, split by how they are compared."""

    numerical: tuple[str, ...]
    categorical: tuple[str, ...]

    @property
    def all(self) -> tuple[str, ...]:
        return self.numerical + self.categorical


def drift_columns() -> DriftColumns:
    """Features and context fields (never identifiers or the timestamp), numerical and categorical."""
    watched = [f for f in TRANSACTION_FIELDS if f.role in (Role.FEATURE, Role.CONTEXT)]
    return DriftColumns(
        numerical=tuple(f.name for f in watched if not f.categorical),
        categorical=tuple(f.name for f in watched if f.categorical),
    )


def example_transaction() -> dict[str, Any]:
    """A valid transaction built from the declared examples (used by docs and tests)."""
    return {f.name: f.example for f in TRANSACTION_FIELDS}
