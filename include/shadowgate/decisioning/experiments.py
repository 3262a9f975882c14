"""Experiments: which challenger runs how (shadow or canary), for whom, and the audited changes to that.

An :class:`Experiment` is an immutable, versioned config. Its lifecycle is::

    draft ──▶ active ──▶ completed
                 │
                 └─────▶ stopped

and nothing leaves ``completed`` or ``stopped``. Every change (:func:`transition`, :func:`with_share`) returns a new
object with ``version + 1``. The :class:`ExperimentBook` is the set of experiments the service runs, with a book
version that increases by one on every change. A change is planned on one version of the book (:func:`plan_transition`,
:func:`plan_share`, :func:`plan_add`: the new book and its :class:`AuditRecord`); the store in Redis
(:mod:`shadowgate.storage.experiment_store`) commits it only if the book is still at that version. The shipped
``config/experiments.yaml`` seeds Redis when it holds no book yet.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shadowgate.registry import ALIASES, CHALLENGER, CHAMPION, is_known_alias

_SLUG = r"^[a-z0-9][a-z0-9-]{0,62}$"
SHIPPED_EXPERIMENTS = "experiments.yaml"


class ConfigError(ValueError):
    """A config file (YAML or the store's JSON) that cannot be read or does not validate.

    Attributes:
        source: the file (path or packaged resource name).
        field: dotted location of the first invalid field (``experiments[1].treatment_share``), or None for a file
            that cannot be parsed at all.
    """

    def __init__(self, source: str, field: str | None, message: str) -> None:
        self.source = source
        self.field = field
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {message}")


class IllegalTransitionError(ValueError):
    """A lifecycle move (or a change) the experiment's current status does not allow."""


class ExperimentNotFoundError(KeyError):
    """No experiment with that id in the book."""


class ExperimentStatus(StrEnum):
    """Lifecycle states."""

    DRAFT = "draft"
    ACTIVE = "active"
    COMPLETED = "completed"
    STOPPED = "stopped"


class ExperimentMode(StrEnum):
    """How the treatment is exposed."""

    SHADOW = "shadow"
    """The treatment model scores every request in the background; control is always served."""
    CANARY = "canary"
    """A sticky share of units is served by the treatment model."""


ALLOWED_TRANSITIONS: Mapping[ExperimentStatus, frozenset[ExperimentStatus]] = {
    ExperimentStatus.DRAFT: frozenset({ExperimentStatus.ACTIVE}),
    ExperimentStatus.ACTIVE: frozenset({ExperimentStatus.COMPLETED, ExperimentStatus.STOPPED}),
    ExperimentStatus.COMPLETED: frozenset(),
    ExperimentStatus.STOPPED: frozenset(),
}
"""status → statuses it may move to."""

_FINAL = frozenset({ExperimentStatus.COMPLETED, ExperimentStatus.STOPPED})


class Experiment(BaseModel):
    """One champion/challenger experiment (immutable; changes produce a new version)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=_SLUG)
    """Slug, unique in the book (``shadow-challenger``)."""
    version: int = Field(default=1, ge=1)
    """Config version; +1 on every change so assignments can be joined to the exact config."""
    description: str = ""
    salt: str = Field(min_length=1)
    """Hash salt of the sticky assignment. Changing it reshuffles every unit, so it is never changed by the API."""
    status: ExperimentStatus = ExperimentStatus.DRAFT
    mode: ExperimentMode
    control_alias: str = CHAMPION
    treatment_alias: str = CHALLENGER
    treatment_share: float = Field(default=0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    """Share of units in treatment (bucket < share). Shadow experiments may keep 0: they serve nobody."""
    priority: int = 100
    """Lower wins when several canaries would serve a unit."""
    started_at: AwareDatetime | None = None
    ended_at: AwareDatetime | None = None

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> Experiment:
        for name in ("control_alias", "treatment_alias"):
            if not is_known_alias(getattr(self, name)):
                raise ValueError(f"{name} must be one of {ALIASES} or challenger-<suffix>, got {getattr(self, name)!r}")
        if self.control_alias == self.treatment_alias:
            raise ValueError("control_alias and treatment_alias must differ")
        if self.mode is ExperimentMode.CANARY and self.status is ExperimentStatus.ACTIVE and self.treatment_share <= 0:
            raise ValueError("an active canary experiment needs treatment_share > 0 (stop it instead)")
        if self.started_at and self.ended_at and self.ended_at < self.started_at:
            raise ValueError("ended_at is before started_at")
        return self

    @property
    def is_active(self) -> bool:
        return self.status is ExperimentStatus.ACTIVE


def transition(
    experiment: Experiment, to: ExperimentStatus | str, *, at: dt.datetime, actor: str, reason: str
) -> Experiment:
    """Move ``experiment`` to status ``to``; returns the new version.

    Activation stamps ``started_at``; completing or stopping stamps ``ended_at``. ``actor`` and ``reason`` are
    required so that no change can be made anonymously; the store writes them to the audit stream.

    Raises:
        IllegalTransitionError: for a move the lifecycle does not allow (including to the same status).
        ValueError: for a missing actor or reason, or a naive ``at``.
    """
    _require_who_why(actor=actor, reason=reason, at=at)
    target = ExperimentStatus(to)
    if target not in ALLOWED_TRANSITIONS[experiment.status]:
        allowed = sorted(s.value for s in ALLOWED_TRANSITIONS[experiment.status]) or ["nothing (final state)"]
        raise IllegalTransitionError(
            f"experiment {experiment.id!r} cannot move from {experiment.status.value!r} to {target.value!r}; "
            f"allowed from {experiment.status.value!r}: {', '.join(allowed)}"
        )
    changes: dict[str, Any] = {"status": target, "version": experiment.version + 1}
    if target is ExperimentStatus.ACTIVE:
        changes["started_at"] = at
    if target in _FINAL:
        changes["ended_at"] = at
    return _revalidate(experiment, changes)


def with_share(experiment: Experiment, share: float, *, actor: str, reason: str) -> Experiment:
    """The experiment with a new treatment share; returns the new version.

    Raising the share only moves units from control to treatment. Lowering it is allowed but moves units *back* to
    control, which breaks stickiness for them; :func:`share_change_flags` names that so the audit shows it.

    Raises:
        IllegalTransitionError: for a completed or stopped experiment.
        ValueError: for a share outside [0, 1] (or not finite), or a missing actor or reason.
    """
    _require_who_why(actor=actor, reason=reason, at=None)
    if experiment.status in _FINAL:
        raise IllegalTransitionError(
            f"experiment {experiment.id!r} is {experiment.status.value}; its share can no longer change"
        )
    if not 0.0 <= share <= 1.0:  # also rejects NaN
        raise ValueError(f"treatment_share must be within [0, 1], got {share!r}")
    return _revalidate(experiment, {"treatment_share": float(share), "version": experiment.version + 1})


def share_change_flags(before: Experiment, after: Experiment) -> list[str]:
    """Audit flags of a share change (``SHARE_LOWERED`` when units move back from treatment to control)."""
    if after.treatment_share < before.treatment_share:
        return ["SHARE_LOWERED"]
    return []


def _require_who_why(*, actor: str, reason: str, at: dt.datetime | None) -> None:
    if not actor.strip():
        raise ValueError("actor is required for every experiment change")
    if not reason.strip():
        raise ValueError("reason is required for every experiment change")
    if at is not None and at.utcoffset() is None:
        raise ValueError("at must be time-zone aware")


def _revalidate(experiment: Experiment, changes: dict[str, Any]) -> Experiment:
    # model_copy(update=...) skips validation; rebuilding keeps every invariant checked on every version.
    return Experiment.model_validate({**experiment.model_dump(), **changes})


class ExperimentBook(BaseModel):
    """All experiments the service knows, with a book version that increases on every persisted change."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(default=1, ge=1)
    experiments: tuple[Experiment, ...] = ()

    @pydantic.model_validator(mode="after")
    def _unique(self) -> ExperimentBook:
        for attr in ("id", "salt"):
            seen: set[str] = set()
            for exp in self.experiments:
                value = getattr(exp, attr)
                if value in seen:
                    # Shared salts would make two experiments assign the same units together (not independent).
                    raise ValueError(f"duplicate experiment {attr} {value!r}")
                seen.add(value)
        return self

    def get(self, experiment_id: str) -> Experiment:
        """The experiment with this id.

        Raises:
            ExperimentNotFoundError: when there is none.
        """
        for exp in self.experiments:
            if exp.id == experiment_id:
                return exp
        raise ExperimentNotFoundError(experiment_id)

    def active(self) -> tuple[Experiment, ...]:
        """Active experiments, highest priority (lowest number) first; ties broken by id for determinism."""
        return self._active

    # Cached because the book is immutable and these run on every request.
    @functools.cached_property
    def _active(self) -> tuple[Experiment, ...]:
        return tuple(sorted((e for e in self.experiments if e.is_active), key=lambda e: (e.priority, e.id)))

    @functools.cached_property
    def by_id(self) -> Mapping[str, Experiment]:
        """Experiments by id (what the request path looks assignments up in)."""
        return {e.id: e for e in self.experiments}

    def replace(self, experiment: Experiment) -> ExperimentBook:
        """The book with ``experiment`` replacing the one with its id, or added when new (same book version)."""
        others = [e for e in self.experiments if e.id != experiment.id]
        if len(others) == len(self.experiments):
            return ExperimentBook(version=self.version, experiments=(*self.experiments, experiment))
        return ExperimentBook(
            version=self.version,
            experiments=tuple(experiment if e.id == experiment.id else e for e in self.experiments),
        )


# --- loading -------------------------------------------------------------------------------------------------------

_M = TypeVar("_M", bound=BaseModel)


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validate_config(model: type[_M], data: Any, *, source: str) -> _M:
    """``model.model_validate(data)`` with failures raised as :class:`ConfigError` naming ``source`` and the field."""
    if not isinstance(data, dict):
        raise ConfigError(source, None, f"expected a mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        field = _field_path(tuple(first["loc"])) or None
        extra = f" (and {exc.error_count() - 1} more errors)" if exc.error_count() > 1 else ""
        raise ConfigError(source, field, f"{first['msg']}{extra}") from exc


def read_yaml(source: Path | Traversable) -> Any:
    """Parse a YAML file (a path or a packaged resource).

    Raises:
        ConfigError: when the file cannot be read or is not valid YAML.
    """
    try:
        text = source.read_text(encoding="utf-8")
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(source), None, f"invalid YAML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(str(source), None, f"cannot read: {exc}") from exc


def config_resource(*parts: str) -> Traversable:
    """A config file shipped inside the package (``shadowgate/decisioning/config/...``)."""
    return resources.files("shadowgate.decisioning").joinpath("config", *parts)


def load_book(path: Path | str | None = None) -> ExperimentBook:
    """The experiment book from a YAML file, or the shipped ``experiments.yaml`` when ``path`` is None.

    Raises:
        ConfigError: naming the file and the invalid field.
    """
    source: Path | Traversable = config_resource(SHIPPED_EXPERIMENTS) if path is None else Path(path)
    return validate_config(ExperimentBook, read_yaml(source), source=str(source))


# --- changes -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditRecord:
    """One change of the book as the audit stream keeps it: who, why, what changed, before and after."""

    at: str
    actor: str
    reason: str
    change: str
    """``seed`` (the book was created), ``transition``, ``share`` or ``add``."""
    experiment_id: str | None
    from_version: int
    """Book version before the change (0 for a seed: there was no book)."""
    to_version: int
    """Book version after the change."""
    experiment_from_version: int | None
    experiment_to_version: int | None
    details: dict[str, Any]
    flags: list[str]
    before: dict[str, Any] | None
    """The experiment before the change (JSON form); None when it is new, and for a seed."""
    after: dict[str, Any] | None
    """The experiment after the change; None for a seed."""
    change_id: str
    """Unique per change: a commit re-sent after a lost reply is recognised and not applied twice."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class BookChange:
    """A change planned on one version of the book: the book it makes (version + 1) and its audit record."""

    book: ExperimentBook
    experiment: Experiment
    """The changed experiment (its new version)."""
    record: AuditRecord


def plan_transition(
    book: ExperimentBook,
    experiment_id: str,
    *,
    to: ExperimentStatus | str,
    actor: str,
    reason: str,
    at: dt.datetime,
) -> BookChange:
    """Move one experiment through its lifecycle (see :func:`transition`).

    Raises:
        ExperimentNotFoundError: no such experiment.
        IllegalTransitionError: a move the lifecycle does not allow.
        ValueError: a missing actor or reason, or a naive ``at``.
    """
    before = book.get(experiment_id)
    after = transition(before, to, at=at, actor=actor, reason=reason)
    details = {"from_status": before.status.value, "to_status": after.status.value}
    return _planned(
        book, after, kind="transition", before=before, details=details, flags=[], actor=actor, reason=reason, at=at
    )


def plan_share(
    book: ExperimentBook, experiment_id: str, *, share: float, actor: str, reason: str, at: dt.datetime
) -> BookChange:
    """Change one experiment's treatment share (see :func:`with_share`); a lowered share is flagged in the audit.

    Raises:
        ExperimentNotFoundError: no such experiment.
        IllegalTransitionError: the experiment is completed or stopped.
        ValueError: a share outside [0, 1], a missing actor or reason.
    """
    _require_who_why(actor=actor, reason=reason, at=at)
    before = book.get(experiment_id)
    after = with_share(before, share, actor=actor, reason=reason)
    details = {"from_share": before.treatment_share, "to_share": after.treatment_share}
    flags = share_change_flags(before, after)
    return _planned(
        book, after, kind="share", before=before, details=details, flags=flags, actor=actor, reason=reason, at=at
    )


def plan_add(book: ExperimentBook, experiment: Experiment, *, actor: str, reason: str, at: dt.datetime) -> BookChange:
    """Add a new experiment (in ``draft``).

    Raises:
        ValueError: the id exists already, or a missing actor or reason.
        IllegalTransitionError: the experiment is not a draft.
    """
    _require_who_why(actor=actor, reason=reason, at=at)
    if any(e.id == experiment.id for e in book.experiments):
        raise ValueError(f"experiment {experiment.id!r} exists already")
    if experiment.status is not ExperimentStatus.DRAFT:
        raise IllegalTransitionError("new experiments start as draft; activate them with a transition")
    details = {"experiment": experiment.model_dump(mode="json")}
    return _planned(
        book, experiment, kind="add", before=None, details=details, flags=[], actor=actor, reason=reason, at=at
    )


def seed_record(book: ExperimentBook, *, actor: str, reason: str, at: dt.datetime) -> AuditRecord:
    """The audit record of a book's creation (in Redis, from the shipped YAML or a replica's last book)."""
    return AuditRecord(
        at=at.isoformat(),
        actor=actor,
        reason=reason,
        change="seed",
        experiment_id=None,
        from_version=0,
        to_version=book.version,
        experiment_from_version=None,
        experiment_to_version=None,
        details={"experiments": {e.id: e.version for e in book.experiments}},
        flags=[],
        before=None,
        after=None,
        change_id=uuid.uuid4().hex,
    )


def _planned(
    book: ExperimentBook,
    after: Experiment,
    *,
    kind: str,
    before: Experiment | None,
    details: dict[str, Any],
    flags: list[str],
    actor: str,
    reason: str,
    at: dt.datetime,
) -> BookChange:
    new_book = ExperimentBook(version=book.version + 1, experiments=book.replace(after).experiments)
    record = AuditRecord(
        at=at.isoformat(),
        actor=actor,
        reason=reason,
        change=kind,
        experiment_id=after.id,
        from_version=book.version,
        to_version=new_book.version,
        experiment_from_version=before.version if before else None,
        experiment_to_version=after.version,
        details=details,
        flags=flags,
        before=before.model_dump(mode="json") if before else None,
        after=after.model_dump(mode="json"),
        change_id=uuid.uuid4().hex,
    )
    return BookChange(book=new_book, experiment=after, record=record)


def book_to_json(book: ExperimentBook) -> str:
    """The book as JSON text (what Redis and the replica's disk cache hold)."""
    return json.dumps(book.model_dump(mode="json"), sort_keys=True)


def book_from_json(text: str | bytes, *, source: str) -> ExperimentBook:
    """A book from its JSON text.

    Raises:
        ConfigError: naming ``source`` when the text is not JSON or does not validate.
    """
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(source, None, f"invalid JSON: {exc}") from exc
    return validate_config(ExperimentBook, data, source=source)
