"""FastAPI dependencies: the runtime built in the lifespan, and the admin API key check."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader

from shadowgate.config import ApiSettings
from shadowgate.serving.runtime import Runtime

API_KEY_HEADER = "X-API-Key"
_api_key = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="Admin API key (SHADOWGATE_API_KEY).")


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_api_settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.api_settings
    return settings


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def require_admin(
    settings: Annotated[ApiSettings, Depends(get_api_settings)],
    key: Annotated[str | None, Security(_api_key)],
) -> None:
    """401 unless the request carries the configured API key (and always 401 when none is configured)."""
    expected = settings.key.get_secret_value() if settings.key is not None else None
    if not expected or key is None or not secrets.compare_digest(key.encode(), expected.encode()):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail=f"a valid {API_KEY_HEADER} header is required",
            headers={"WWW-Authenticate": "ApiKey"},
        )


AdminDep = Depends(require_admin)
