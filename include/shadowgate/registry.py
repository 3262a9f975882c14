"""The model registry: the only code that knows MLflow aliases.

Models are referenced by alias only (``models:/bnpl_default@champion``); registry stages are never used. Every alias
move is tagged on the model version with its reason and time, so the registry itself is an audit trail.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS)
"""The fixed aliases. Further challengers are named ``challenger-<suffix>`` (see :func:`is_known_alias`)."""

_EXTRA_CHALLENGER = re.compile(r"^challenger-[a-z0-9][a-z0-9_-]{0,30}$")


def is_known_alias(alias: str) -> bool:
    """One of :data:`ALIASES`, or an extra challenger ``challenger-<suffix>`` (several challengers at once)."""
    return alias in ALIASES or _EXTRA_CHALLENGER.fullmatch(alias) is not None


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


class ModelRegistry:
    """Alias operations on one registered model.

    Args:
        tracking_uri: MLflow tracking (and registry) URI.
        model_name: the registered model (``bnpl_default``).
    """

    def __init__(self, *, tracking_uri: str, model_name: str) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.model_name = model_name
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
        """The version behind ``alias``, or None when the alias (or the model) does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self._client.get_model_version_by_alias(self.model_name, alias)
        except MlflowException:
            return None
        return RegisteredVersion(
            name=mv.name,
            version=str(mv.version),
            run_id=mv.run_id,
            aliases=tuple(mv.aliases),
            tags=dict(mv.tags),
        )

    def aliases(self) -> dict[str, str]:
        """alias → version for every alias that is set."""
        found = {alias: self.version(alias) for alias in ALIASES}
        return {alias: v.version for alias, v in found.items() if v is not None}

    def assign(self, alias: str, version: str, *, reason: str) -> None:
        """Point ``alias`` at ``version`` and record why on that version.

        Raises:
            ValueError: for an alias that is neither in :data:`ALIASES` nor ``challenger-<suffix>``.
        """
        if not is_known_alias(alias):
            raise ValueError(f"unknown alias {alias!r}; expected one of {ALIASES} or challenger-<suffix>")
        self._client.set_registered_model_alias(self.model_name, alias, version)
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self._client.set_model_version_tag(self.model_name, version, f"alias.{alias}.reason", reason)
        self._client.set_model_version_tag(self.model_name, version, f"alias.{alias}.at", now)
