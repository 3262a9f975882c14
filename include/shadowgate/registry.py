"""The model registry: the only code that knows MLflow aliases.

Models are referenced by alias only (``models:/bnpl_default@champion``); registry stages are never used. Every alias
move goes through :meth:`ModelRegistry.move_alias`, which enforces who may move ``@champion`` and records the move
twice: as tags in MLflow (on the model version and the registered model) and as a
:class:`~shadowgate.events.DeploymentEvent` in the warehouse's ``deployment_events`` table.

Only three things move ``@champion``: the first deployment (``@champion`` not set yet), the promotion gate
(:meth:`ModelRegistry.promote_champion`) and a rollback to ``@previous`` (:meth:`ModelRegistry.rollback`). Any other
move is refused (``force_champion``, which an earlier version allowed, is read in old records and never made now);
a move made around these rules (by hand in the MLflow UI) is found and alerted by the API. A challenger alias is
removed when the gate retires its version or promotes it (:meth:`ModelRegistry.remove_alias`); ``@previous`` when a
rollback uses it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from shadowgate.events.deployment import DEPLOYMENT_ACTIONS, DeploymentAction, DeploymentEvent, deployment_event_id

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS)
"""The fixed aliases. Further challengers are named ``challenger-<suffix>`` (see :func:`is_known_alias`)."""

MIN_FORCE_REASON_CHARS = 20
"""A rollback must say why in at least this many characters (a ticket id alone is not a reason)."""

MAX_EVENT_CHARS = 90_000
"""Largest recorded move (JSON): MLflow caps a registry tag value at 100,000 characters."""

_EXTRA_CHALLENGER = re.compile(r"^challenger-[a-z0-9][a-z0-9_-]{0,30}$")
_NOT_FOUND = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})
"""Error codes MLflow answers for a model or alias that does not exist (anything else is a failure)."""


def is_known_alias(alias: str) -> bool:
    """One of :data:`ALIASES`, or an extra challenger ``challenger-<suffix>`` (several challengers at once)."""
    return alias in ALIASES or _EXTRA_CHALLENGER.fullmatch(alias) is not None


class DeploymentLog(Protocol):
    """Where deployment events are stored (the warehouse: ``shadowgate.storage.deployments.WarehouseDeploymentLog``).

    ``record`` must be idempotent on the event id: a recorded move may be sent again.
    """

    def record(self, event: DeploymentEvent) -> None: ...


class AliasMoveRefusedError(ValueError):
    """A move the rules do not allow. Nothing was changed."""


class DeploymentNotRecordedError(RuntimeError):
    """The alias moved and the move is in the MLflow tags, but the deployment event did not reach the warehouse.

    Sending the same move again (:meth:`ModelRegistry.resend_recorded`, ``shadowgate record-deployments``) stores it
    once.

    Attributes:
        event: the recorded move.
    """

    def __init__(self, event: DeploymentEvent, error: BaseException) -> None:
        super().__init__(
            f"@{event.alias} of {event.model_name} moved to version {event.to_version} (recorded in MLflow tags, "
            f"event {event.event_id}), but the deployment event was not written to the warehouse: "
            f"{type(error).__name__}: {error}. Re-send it with `shadowgate record-deployments`."
        )
        self.event = event


@dataclass(frozen=True)
class RegisteredVersion:
    """One version of the registered model, as the registry reports it."""

    name: str
    version: str
    run_id: str | None
    aliases: tuple[str, ...]
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def _tag(alias: str, name: str) -> str:
    return f"alias.{alias}.{name}"


class ModelRegistry:
    """Alias operations on one registered model.

    Args:
        tracking_uri: MLflow tracking (and registry) URI.
        model_name: the registered model (``bnpl_default``).
        deployments: where alias moves are recorded; without it the registry reads but cannot move aliases.
    """

    def __init__(self, *, tracking_uri: str, model_name: str, deployments: DeploymentLog | None = None) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.deployments = deployments
        self._client: MlflowClient = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def alias_uri(self, alias: str) -> str:
        """The URI to load the version behind ``alias``."""
        return f"models:/{self.model_name}@{alias}"

    def ensure_model(self) -> None:
        """Create the registered model if it does not exist yet."""
        from mlflow.exceptions import MlflowException

        try:
            self._client.get_registered_model(self.model_name)
        except MlflowException:
            self._client.create_registered_model(
                self.model_name, description="Probability that a BNPL purchase ends in default."
            )

    def version(self, alias: str) -> RegisteredVersion | None:
        """The version behind ``alias``, or None when the alias (or the model) does not exist.

        Raises:
            MlflowException: any other failure (server down, no permission): "unknown" must never read as "unset",
                or a flaky registry would let a first deployment replace a champion.
        """
        from mlflow.exceptions import MlflowException

        try:
            mv = self._client.get_model_version_by_alias(self.model_name, alias)
        except MlflowException as error:
            if error.error_code in _NOT_FOUND:
                return None
            raise
        return RegisteredVersion(
            name=mv.name,
            version=str(mv.version),
            run_id=mv.run_id,
            aliases=tuple(mv.aliases),
            tags=dict(mv.tags),
        )

    def training_metric(self, version: str, name: str = "valid_auc") -> float | None:
        """A metric of the training run behind ``version`` (its validation AUC by default), or None when the version,
        its run or the metric does not exist (a model registered by hand)."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self._client.get_model_version(self.model_name, version)
            if not mv.run_id:
                return None
            value = self._client.get_run(mv.run_id).data.metrics.get(name)
        except MlflowException as error:
            if error.error_code in _NOT_FOUND:
                return None
            raise
        return None if value is None else float(value)

    def aliases(self) -> dict[str, str]:
        """alias → version for every alias that is set."""
        found = {alias: self.version(alias) for alias in ALIASES}
        return {alias: v.version for alias, v in found.items() if v is not None}

    # ------------------------------------------------------------------------------------------------ moves

    def check_move(self, alias: str, *, action: DeploymentAction, reason: str, actor: str, current: str | None) -> None:
        """Refuse a move the rules do not allow, before anything changes.

        ``@champion`` moves only as the first deployment (while it is not set), by the promotion gate (with
        evidence: :meth:`promote_champion`) or by a rollback (:meth:`rollback`); other aliases move by ``assign``,
        ``first_deployment``, ``promote`` (``@previous``), ``retire`` (a challenger removed) or ``rollback``.

        Args:
            alias: the alias to move.
            action: why it moves.
            reason: the words recorded with the move.
            actor: who moves it.
            current: the version the alias points at now (None: not set).

        Raises:
            AliasMoveRefusedError: with the rule that forbids the move.
        """
        if not is_known_alias(alias):
            raise AliasMoveRefusedError(f"unknown alias {alias!r}; expected one of {ALIASES} or challenger-<suffix>")
        if action not in DEPLOYMENT_ACTIONS:
            raise AliasMoveRefusedError(f"unknown action {action!r}; expected one of {DEPLOYMENT_ACTIONS}")
        if not reason.strip():
            raise AliasMoveRefusedError("an alias move needs a reason")
        if not actor.strip():
            raise AliasMoveRefusedError("an alias move needs an actor (who moves it)")
        if action == "retire" and (alias in (CHAMPION, PREVIOUS)):
            raise AliasMoveRefusedError(f"retire removes a challenger alias, not @{alias}")
        if action == "rollback" and alias not in (CHAMPION, PREVIOUS):
            raise AliasMoveRefusedError(f"a rollback moves @champion and @previous only, not @{alias}")
        if action == "force_champion":
            raise AliasMoveRefusedError(
                "forcing @champion is no longer allowed: it moves only by the first deployment, the promotion gate "
                "(promote_challenger) or `shadowgate rollback --reason …`"
            )
        if alias != CHAMPION:
            return
        if action == "retire":
            raise AliasMoveRefusedError("@champion is never retired: a rollback or a promotion replaces it")
        if action == "assign":
            raise AliasMoveRefusedError(
                "@champion is not moved by training: only the first deployment, the promotion gate "
                "(promote_challenger) or `shadowgate rollback` move it (train registers @challenger)"
            )
        if action == "first_deployment" and current is not None:
            raise AliasMoveRefusedError(
                f"@champion is already set (version {current}): the first deployment cannot move it; only the "
                "promotion gate (promote_challenger) or `shadowgate rollback` may"
            )

    def move_alias(
        self,
        alias: str,
        version: str,
        *,
        reason: str,
        actor: str,
        action: DeploymentAction,
        evidence: Mapping[str, Any] | None = None,
    ) -> DeploymentEvent | None:
        """Point ``alias`` at ``version``: the one audited way any alias moves.

        The move is recorded on the target version's tags (reason, actor, previous version, time, action, and the
        whole event) and on the registered model **before** the alias moves, then the deployment event is written
        to the warehouse. When the alias already points at ``version`` nothing moves; the move recorded on that
        version, if any, is sent to the warehouse again (stored once), which completes a move whose warehouse write
        failed.

        Args:
            alias: the alias to move.
            version: the registry version it should point at.
            reason: why (recorded verbatim).
            actor: who (an operator ``user@host``, ``airflow:<dag_id>``, the bootstrap).
            action: the kind of move (see :data:`~shadowgate.events.deployment.DeploymentAction`).
            evidence: what the move rests on (JSON-able).

        Returns:
            The recorded move, or None when the alias already pointed at ``version`` with no move recorded.

        Raises:
            AliasMoveRefusedError: the rules forbid the move (see :meth:`check_move`); nothing changed.
            DeploymentNotRecordedError: the alias moved (and is recorded in MLflow) but the warehouse write failed.
            ValueError: the registry has no deployment log.
        """
        if self.deployments is None:
            raise ValueError("this registry was opened without a deployment log: it cannot move aliases")
        current = self.version(alias)
        from_version = current.version if current is not None else None
        self.check_move(alias, action=action, reason=reason, actor=actor, current=from_version)
        if from_version == str(version):
            recorded = self.recorded_move(alias)
            if recorded is None:
                logger.warning("@%s already points at version %s and no move is recorded there", alias, version)
                return None
            self._send(recorded)
            return recorded
        occurred_at = dt.datetime.now(dt.UTC)
        event = DeploymentEvent(
            event_id=deployment_event_id(
                model_name=self.model_name,
                alias=alias,
                from_version=from_version,
                to_version=str(version),
                action=action,
                occurred_at=occurred_at,
            ),
            occurred_at=occurred_at,
            action=action,
            model_name=self.model_name,
            alias=alias,
            from_version=from_version,
            to_version=str(version),
            reason=reason.strip(),
            actor=actor.strip(),
            evidence=dict(evidence) if evidence is not None else None,
        )
        payload = event.model_dump_json()
        if len(payload) > MAX_EVENT_CHARS:
            raise AliasMoveRefusedError(f"the move's record is {len(payload):,} characters (max {MAX_EVENT_CHARS:,})")
        # Record first, then move: a crash in between leaves a recorded move whose alias did not move, which is
        # never sent (recorded_move checks where the alias points), rather than a move nobody recorded.
        tags = {
            _tag(alias, "reason"): event.reason,
            _tag(alias, "at"): occurred_at.isoformat(),
            _tag(alias, "actor"): event.actor,
            _tag(alias, "action"): action,
            _tag(alias, "from_version"): from_version or "",
            _tag(alias, "event"): payload,
        }
        for key, value in tags.items():
            self._client.set_model_version_tag(self.model_name, str(version), key, value)
        summary = event.model_dump(mode="json", exclude={"evidence", "schema_version"})
        self._client.set_registered_model_tag(self.model_name, f"deployment.{alias}", json.dumps(summary))
        self._client.set_registered_model_alias(self.model_name, alias, str(version))
        logger.info(
            "@%s of %s: %s -> %s (%s by %s: %s)", alias, self.model_name, from_version, version, action, actor, reason
        )
        self._send(event)
        return event

    def promote_champion(
        self,
        version: str,
        *,
        reason: str,
        actor: str,
        evidence: Mapping[str, Any],
        challenger_alias: str | None = None,
    ) -> list[DeploymentEvent]:
        """The promotion gate's move: the current champion becomes ``@previous``, ``version`` becomes ``@champion``.

        Args:
            version: the version that passed the gate.
            reason: the gate's verdict.
            actor: the gate (e.g. ``airflow:promote_challenger``).
            evidence: the statistics the verdict rests on (required: a promotion without evidence is refused).
            challenger_alias: the alias the version was compared under; removed once it is champion (a version is
                not its own challenger), if it still points at ``version``.

        Returns:
            The recorded moves (``@previous`` first, then ``@champion``, then the challenger alias's removal).

        Raises:
            AliasMoveRefusedError: no evidence, or no champion yet (the first deployment is the bootstrap's).
            DeploymentNotRecordedError: an alias moved but its event did not reach the warehouse.
        """
        if not evidence:
            raise AliasMoveRefusedError("a promotion needs the gate's evidence")
        current = self.version(CHAMPION)
        if current is None:
            raise AliasMoveRefusedError("@champion is not set: the first deployment is not a promotion")
        events = []
        if current.version != str(version):
            moved = self.move_alias(
                PREVIOUS,
                current.version,
                reason=f"replaced as champion by version {version}: {reason}",
                actor=actor,
                action="promote",
                evidence=evidence,
            )
            if moved is not None:
                events.append(moved)
        champion = self.move_alias(
            CHAMPION, str(version), reason=reason, actor=actor, action="promote", evidence=evidence
        )
        if champion is not None:
            events.append(champion)
        if challenger_alias is not None and challenger_alias != CHAMPION:
            still = self.version(challenger_alias)
            if still is not None and still.version == str(version):
                removed = self.remove_alias(
                    challenger_alias,
                    reason=f"promoted to champion: {reason}",
                    actor=actor,
                    action="promote",
                    evidence=evidence,
                )
                if removed is not None:
                    events.append(removed)
        return events

    def remove_alias(
        self,
        alias: str,
        *,
        reason: str,
        actor: str,
        action: DeploymentAction,
        evidence: Mapping[str, Any] | None = None,
    ) -> DeploymentEvent | None:
        """Remove ``alias`` (a retired or promoted challenger, ``@previous`` after a rollback), recorded like a move:
        tags on the version it pointed at and on the registered model first, then the alias is deleted, then the
        event (``to_version`` None) is written to the warehouse.

        Returns:
            The recorded removal, or None when the alias was not set (nothing to remove).

        Raises:
            AliasMoveRefusedError: the rules forbid it (``@champion`` is never removed).
            DeploymentNotRecordedError: the alias was removed but the event did not reach the warehouse (the
                registered model's ``removed.<alias>`` tag holds it: :meth:`resend_recorded` sends it again).
        """
        if self.deployments is None:
            raise ValueError("this registry was opened without a deployment log: it cannot move aliases")
        if alias == CHAMPION:
            raise AliasMoveRefusedError("@champion is never removed: a promotion or a rollback replaces it")
        current = self.version(alias)
        if current is None:
            return None
        self.check_move(alias, action=action, reason=reason, actor=actor, current=current.version)
        occurred_at = dt.datetime.now(dt.UTC)
        event = DeploymentEvent(
            event_id=deployment_event_id(
                model_name=self.model_name,
                alias=alias,
                from_version=current.version,
                to_version=None,
                action=action,
                occurred_at=occurred_at,
            ),
            occurred_at=occurred_at,
            action=action,
            model_name=self.model_name,
            alias=alias,
            from_version=current.version,
            to_version=None,
            reason=reason.strip(),
            actor=actor.strip(),
            evidence=dict(evidence) if evidence is not None else None,
        )
        payload = event.model_dump_json()
        if len(payload) > MAX_EVENT_CHARS:
            raise AliasMoveRefusedError(
                f"the removal's record is {len(payload):,} characters (max {MAX_EVENT_CHARS:,})"
            )
        self._client.set_model_version_tag(self.model_name, current.version, _tag(alias, "removed"), payload)
        self._client.set_registered_model_tag(self.model_name, f"removed.{alias}", payload)
        summary = event.model_dump(mode="json", exclude={"evidence", "schema_version"})
        self._client.set_registered_model_tag(self.model_name, f"deployment.{alias}", json.dumps(summary))
        self._client.delete_registered_model_alias(self.model_name, alias)
        logger.info(
            "@%s of %s removed from version %s (%s by %s: %s)",
            alias,
            self.model_name,
            current.version,
            action,
            actor,
            reason,
        )
        self._send(event)
        return event

    def rollback(self, *, reason: str, actor: str) -> list[DeploymentEvent]:
        """``@champion`` back to the version of ``@previous``; ``@previous`` is removed (a second rollback has nowhere
        to go until a promotion sets it again). The rolled-back version keeps its tags (``alias.champion.*``) and is
        tagged ``shadowgate.rolled_back`` with the reason.

        Args:
            reason: why, in at least :data:`MIN_FORCE_REASON_CHARS` characters (recorded verbatim).
            actor: who (``user@host``, ``api:<key id>``).

        Returns:
            The recorded moves (``@champion`` first, then the removal of ``@previous``).

        Raises:
            AliasMoveRefusedError: no ``@previous`` (nothing to roll back to), no ``@champion``, or a short reason.
            DeploymentNotRecordedError: an alias moved but its event did not reach the warehouse.
        """
        if len(reason.strip()) < MIN_FORCE_REASON_CHARS:
            raise AliasMoveRefusedError(
                f"a rollback needs a reason of at least {MIN_FORCE_REASON_CHARS} characters (got {len(reason.strip())})"
            )
        previous, champion = self.version(PREVIOUS), self.version(CHAMPION)
        if champion is None:
            raise AliasMoveRefusedError("@champion is not set: nothing to roll back")
        if previous is None:
            raise AliasMoveRefusedError("@previous is not set: there is no earlier champion to roll back to")
        evidence = {"rolled_back_version": champion.version, "restored_version": previous.version}
        self._client.set_model_version_tag(self.model_name, champion.version, "shadowgate.rolled_back", reason.strip())
        events = []
        moved = self.move_alias(
            CHAMPION, previous.version, reason=reason, actor=actor, action="rollback", evidence=evidence
        )
        if moved is not None:
            events.append(moved)
        removed = self.remove_alias(
            PREVIOUS,
            reason=f"restored as champion by a rollback: {reason.strip()}",
            actor=actor,
            action="rollback",
            evidence=evidence,
        )
        if removed is not None:
            events.append(removed)
        return events

    def recorded_move(self, alias: str) -> DeploymentEvent | None:
        """The move that put ``alias`` where it points now, as recorded on that version (None: none recorded)."""
        current = self.version(alias)
        if current is None:
            return None
        raw = current.tags.get(_tag(alias, "event"))
        if not raw:
            return None
        try:
            event = DeploymentEvent.model_validate_json(raw)
        except ValueError:
            logger.warning("the move recorded for @%s on version %s is unreadable", alias, current.version)
            return None
        if event.alias != alias or event.to_version != current.version or event.model_name != self.model_name:
            return None
        return event

    def resend_recorded(self, aliases: Iterable[str] = ALIASES) -> list[DeploymentEvent]:
        """Send the recorded move of each set alias to the warehouse again (each is stored once).

        Completes moves whose warehouse write failed; a no-op for moves already stored.
        """
        if self.deployments is None:
            raise ValueError("this registry was opened without a deployment log")
        events = [event for alias in aliases if (event := self.recorded_move(alias)) is not None]
        events += self._recorded_removals(aliases)
        for event in events:
            self._send(event)
        return events

    def _recorded_removals(self, aliases: Iterable[str]) -> list[DeploymentEvent]:
        """The last recorded removal of each alias that is still unset (its tag on the registered model)."""
        from mlflow.exceptions import MlflowException

        try:
            tags = dict(self._client.get_registered_model(self.model_name).tags)
        except MlflowException as error:
            if error.error_code in _NOT_FOUND:
                return []
            raise
        out = []
        for alias in aliases:
            raw = tags.get(f"removed.{alias}")
            if not raw or self.version(alias) is not None:
                continue
            try:
                out.append(DeploymentEvent.model_validate_json(raw))
            except ValueError:
                logger.warning("the removal recorded for @%s is unreadable", alias)
        return out

    def _send(self, event: DeploymentEvent) -> None:
        assert self.deployments is not None  # checked by every caller
        try:
            self.deployments.record(event)
        except Exception as error:
            failure = DeploymentNotRecordedError(event, error)
            logger.error("%s", failure)
            raise failure from error
