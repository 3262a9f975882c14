"""One 422 shape for every route: FastAPI's ``{"detail": [...]}``, with exception objects in ``ctx`` made readable.

FastAPI's default handler JSON-encodes a ``ValueError`` raised by a validator as ``{}``; the message is in ``msg``, but
``ctx.error`` should not be an empty object, so it is replaced by its text here, once, for all routes.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

_PLAIN = (str, int, float, bool, type(None))


def _readable(error: dict[str, Any]) -> dict[str, Any]:
    ctx = error.get("ctx")
    if isinstance(ctx, dict):
        error = {**error, "ctx": {k: v if isinstance(v, _PLAIN) else str(v) for k, v in ctx.items()}}
    return error


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 with every failing field: ``loc`` (``["body", field, ...]``), ``type``, ``msg``, ``input``, ``ctx``."""
    assert isinstance(exc, RequestValidationError)
    detail = [_readable(dict(e)) for e in exc.errors()]
    return JSONResponse(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content={"detail": jsonable_encoder(detail)})


RETRY_AFTER_S = 5
"""What a refused client is told to wait before trying again."""


async def journal_full(request: Request, exc: Exception) -> JSONResponse:
    """503 + ``Retry-After`` when a decision or outcome cannot be journaled (it would be answered but not logged)."""
    return JSONResponse(
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        content={"detail": f"the decision log is unavailable, nothing was recorded: {exc}"},
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )
