"""FastAPI dependencies: the runtime built in the lifespan, and the two API key scopes (admin, ingest)."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader
from pydantic import SecretStr

from shadowgate.config import ApiSettings
from shadowgate.serving.runtime import Runtime

API_KEY_HEADER = "X-API-Key"
INGEST_KEY_HEADER = "X-Ingest-Key"
_admin_key = APIKeyHeader(
    name=API_KEY_HEADER,
    scheme_name="AdminKey",
    auto_error=False,
    description="Admin key (`SHADOWGATE_API_KEY`): experiment changes and model reloads. Not accepted for outcomes.",
)
_ingest_key = APIKeyHeader(
    name=INGEST_KEY_HEADER,
    scheme_name="IngestKey",
    auto_error=False,
    description="Ingest key (`SHADOWGATE_API_INGEST_KEY`): reporting outcomes. Not accepted on admin endpoints.",
)


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_api_settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.api_settings
    return settings


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ApiSettingsDep = Annotated[ApiSettings, Depends(get_api_settings)]


def _matches(expected: SecretStr | None, given: str | None) -> bool:
    secret = expected.get_secret_value() if expected is not None else None
    return bool(secret) and given is not None and secrets.compare_digest(given.encode(), secret.encode())  # type: ignore[union-attr]


def _require(expected: SecretStr | None, given: str | None, header: str) -> None:
    """401 unless ``given`` is the configured key (and always 401 when none is configured)."""
    if not _matches(expected, given):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail=f"a valid {header} header is required",
            headers={"WWW-Authenticate": "ApiKey"},
        )


def admin_caller(request: Request, settings: ApiSettingsDep) -> bool:
    """Whether the request carries the admin key (for endpoints that answer everyone, and more to an admin). The
    header is read directly, so the schema does not make it a requirement of such an endpoint."""
    return _matches(settings.key, request.headers.get(API_KEY_HEADER))


AdminCallerDep = Annotated[bool, Depends(admin_caller)]


def require_admin(settings: ApiSettingsDep, key: Annotated[str | None, Security(_admin_key)]) -> None:
    """401 unless the request carries the admin key in ``X-API-Key``."""
    _require(settings.key, key, API_KEY_HEADER)


def require_ingest(settings: ApiSettingsDep, key: Annotated[str | None, Security(_ingest_key)]) -> None:
    """401 unless the request carries the ingest key in ``X-Ingest-Key``."""
    _require(settings.ingest_key, key, INGEST_KEY_HEADER)


AdminDep = Depends(require_admin)
IngestDep = Depends(require_ingest)


def batch_limit(field: str, noun: str) -> Any:
    """A dependency answering 413 for a batch with more ``field`` items than ``SHADOWGATE_SERVING_MAX_BATCH``, before
    the items are validated (dependencies run before the body); a body that is not JSON is left to the 422."""

    async def check(request: Request, runtime: RuntimeDep) -> None:
        try:
            payload = await request.json()
        except ValueError:
            return
        items = payload.get(field) if isinstance(payload, dict) else None
        limit = runtime.serving.max_batch
        if isinstance(items, list) and len(items) > limit:
            raise HTTPException(
                status_code=status.HTTP_413_CONTENT_TOO_LARGE,
                detail=f"batch of {len(items)} {noun} exceeds the limit of {limit}",
            )

    return Depends(check)
